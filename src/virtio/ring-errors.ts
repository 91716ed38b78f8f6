/**
 * Driver violations found while walking a ring (and MEMORY_FAULT, raised by the data plane). The numbers are shared with the C++ fast path
 * (native/ring_errors.h); a test compares both tables.
 */
export const RingError = {
  OK: 0,
  /** avail->idx more than the queue size ahead of lastAvailIdx (§2.7.13.3). */
  AVAIL_IDX_JUMP: 1,
  /** An avail ring entry names a descriptor beyond the table. */
  HEAD_OUT_OF_RANGE: 2,
  /** desc.next beyond the table. */
  NEXT_OUT_OF_RANGE: 3,
  /** A chain longer than its table: a loop. */
  DESC_LOOP: 4,
  /** Indirect table of length 0 or not a multiple of 16 (§2.7.5.3.1). */
  INDIRECT_BAD_LEN: 5,
  /** INDIRECT inside an indirect table, or together with NEXT (§2.7.5.3.1). */
  INDIRECT_NESTED: 6,
  /** INDIRECT used without VIRTIO_RING_F_INDIRECT_DESC. */
  INDIRECT_NOT_NEGOTIATED: 7,
  /** [addr, addr+len) not entirely in guest memory. */
  ADDR_OUT_OF_MEMORY: 8,
  /** A descriptor of length 0. */
  ZERO_LEN: 9,
  /** A device-readable descriptor after a writable one (§2.7.4.2). */
  READABLE_AFTER_WRITABLE: 10,
  /** A chain over 2^32 - 1 bytes. */
  CHAIN_TOO_LONG: 11,
  /** Ring areas not mapped in one region, or misaligned (§2.7). */
  RING_ADDR_INVALID: 12,
  /** More memory segments than one element may carry (1024). */
  TOO_MANY_SEGMENTS: 13,
  /**
   * Not a driver violation: the memory under the ring or a buffer went away while in use (a
   * front-end shrank the region's file: SIGBUS, contained by native/memory_fault.h). Raised by
   * the data plane, never by the walk.
   */
  MEMORY_FAULT: 14,
  /**
   * Packed ring: a later descriptor of a chain not marked available for the wrap counter of its
   * position (§2.8.6: the flags of every descriptor in a list are set, and the first is made
   * available last). Also how a chain longer than the ring shows: it reaches its own start.
   */
  DESC_NOT_AVAILABLE: 15,
  /** Packed ring: a buffer id not below the queue size (§2.8.6). */
  ID_OUT_OF_RANGE: 16,
} as const;

export type RingErrorCode = (typeof RingError)[keyof typeof RingError];

const names = Object.entries(RingError)
  .sort((a, b) => a[1] - b[1])
  .map(([k]) => k);

export function ringErrorName(code: number): string {
  return names[code] ?? 'UNKNOWN';
}

/** All names by code, in order (compared with the native table). */
export const ringErrorNames: readonly string[] = names;

/** The log line for a vring that broke with error `name` (both data planes say the same). */
export function brokenMessage(name: string): string {
  return name === 'MEMORY_FAULT'
    ? 'vring broken: its guest memory went away under it (SIGBUS contained); this queue stops, the others go on'
    : 'vring broken by a driver violation; this queue stops, the others go on';
}
