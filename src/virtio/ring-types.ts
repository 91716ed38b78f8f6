/**
 * What both ring layouts share: the configuration a ring starts with, the chain a pop returns,
 * and the batch API (pop, fill, flush, notify) the data planes drive. The split ring
 * (split-ring.ts, virtio 1.2 §2.7) and the packed ring (packed-ring.ts, §2.8) implement it; the
 * C++ fast path (native/vring.h) has the same API over the same two layouts.
 */
import type { DirtyLog } from './dirty-log.js';
import type { Segment } from './guest-memory.js';
import type { RingEvent } from './ring-events.js';
import type { JournalRecordRef } from './ring-journal.js';

export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
/** Segments one chain may use (libvhost-user's VIRTQUEUE_MAX_SIZE), and per burst. */
export const MAX_CHAIN_SEGS = 1024;
export const BURST_SEGS = 4096;
export const MAX_BURST = 64;
/** Descriptors kept per chain in the ring trace; the rest of a longer chain is not listed. */
export const TRACE_MAX_DESCS = 256;

export interface RingConfig {
  num: number;
  /**
   * Split: descriptor table, available ring, used ring. Packed: descriptor ring, driver event
   * suppression (the driver area), device event suppression (the device area), as
   * SET_VRING_ADDR names them (desc, avail, used).
   */
  descVa: bigint;
  availVa: bigint;
  usedVa: bigint;
  eventIdx: boolean;
  indirect: boolean;
  notifyOnEmpty: boolean;
  /** VIRTIO_F_RING_PACKED: the packed layout (§2.8). */
  packed?: boolean;
  /**
   * VIRTIO_F_IN_ORDER (§2.7.9, §2.8.9): a flush publishes one used element for the whole batch,
   * with the id of its last buffer; the driver takes the buffers before it as used in full.
   * Only where every buffer's length is known without its own element: the transmitq (the
   * device writes nothing), and only with buffers used in the order they came.
   */
  inOrderBatch?: boolean;
  /**
   * VHOST_VRING_F_LOG (vhost-user.rst "Migration"): log used ring writes at this guest
   * physical address (SET_VRING_ADDR's log_guest_addr) while the dirty log is on.
   */
  logGuestAddr?: bigint;
  /**
   * `--ring-state`: where a packed ring keeps its position outside the process
   * (ring-journal.ts); absent: nowhere. Split rings have used->idx in guest memory.
   */
  journal?: JournalRecordRef;
}

/** One chain: readable segments (`out`) then writable ones (`in`). */
export interface Element {
  /** Split: the head descriptor's index. Packed: the buffer id (§2.8.6, in the last descriptor). */
  head: number;
  out: Segment[];
  in: Segment[];
  outLen: number;
  inLen: number;
  /** Packed: descriptor ring slots the chain took (the used position skips them). Split: 1. */
  slots: number;
}

/**
 * Descriptors between two packed ring positions (position | wrap counter << 15) of a ring of
 * `num`: from `used` forward to `avail`; equal positions with different counters are a full lap.
 */
export function packedInFlight(avail: number, used: number, num: number): number {
  const a = avail & 0x7fff;
  const u = used & 0x7fff;
  if (a === u) return (avail ^ used) & 0x8000 ? num : 0;
  return (a - u + num) % num;
}

/** A ring's position and notification state (what a stop hands back, what tests compare). */
export interface RingState {
  lastAvailIdx: number;
  shadowAvailIdx: number;
  usedIdx: number;
  signalledUsed: number;
  signalledUsedValid: boolean;
  broken: boolean;
  error: number;
}

/**
 * What both ring layouts keep beside their positions, set from outside only through methods:
 * the dirty log, the ring trace, and the last interrupt decision (native/vring.h has the same
 * setters).
 */
export abstract class RingSide {
  signalledUsed = 0;
  signalledUsedValid = false;
  /** The dirty page log (live migration): set while VHOST_F_LOG_ALL is acked. */
  protected log: DirtyLog | undefined;
  /** Set to see every step (the ring trace); unset costs nothing but a test. */
  protected onEvent: ((e: RingEvent) => void) | undefined;

  /** The dirty page log from now on (undefined: off). */
  setLog(log: DirtyLog | undefined): void {
    this.log = log;
  }

  /** Every step from now on to `fn` (the ring trace); undefined: off. */
  setTrace(fn: ((e: RingEvent) => void) | undefined): void {
    this.onEvent = fn;
  }

  /** The last used index an interrupt was decided for (a held-back one is forgotten; a reattached ring keeps it). */
  setSignalled(used: number, valid: boolean): void {
    this.signalledUsed = used;
    this.signalledUsedValid = valid;
  }
}

/** The batch API of a ring, device side, in libvhost-user's words. */
export interface Vring {
  readonly cfg: RingConfig;
  /**
   * Split: the next avail ring entry (free-running u16). Packed: the next descriptor to read,
   * bits 0-14 position and bit 15 the wrap counter, as SET_VRING_BASE encodes it.
   */
  readonly lastAvailIdx: number;
  /** Split: used->idx as published. Packed: the next used position, encoded as above. */
  readonly usedIdx: number;
  readonly broken: boolean;
  readonly error: number;
  /** The dirty page log from now on (undefined: off). */
  setLog(log: DirtyLog | undefined): void;
  /** Every step from now on to `fn` (the ring trace); undefined: off. */
  setTrace(fn: ((e: RingEvent) => void) | undefined): void;
  /** The last used index an interrupt was decided for, as state() reports it. */
  setSignalled(used: number, valid: boolean): void;
  /** Step 1, pop: up to `max` chains; a driver violation breaks the ring (chains before it are returned). */
  popBurst(max: number): Element[];
  /** Gives back the last `count` popped chains (not yet filled). */
  rewind(count: number): void;
  /** Step 2, fill: used element `idx` of the batch: chain `head` (taking `slots` slots), `len` bytes written. */
  fill(head: number, len: number, idx: number, slots?: number): void;
  /** Step 3, flush: publish the `count` elements filled. */
  flush(count: number): void;
  /** used-wrap (a fault plan's lie): packed rings flag element `idx` for the other wrap counter; split rings have no flags. */
  flipWrap(idx: number): void;
  /** Step 4, notify: does the driver want an interrupt for what was flushed? */
  needNotify(): boolean;
  /** Enables or suppresses the driver's kicks. */
  setNotification(enable: boolean): void;
  /** True when the driver made nothing new available. */
  empty(): boolean;
  /** Marks the ring broken from outside the walk (a memory fault). */
  break(err: number): void;
  state(): RingState;
  /** The fault plan's view of the descriptors (used-id "not-a-head", desc-rewrite). */
  nextOf(head: number): number;
  rewriteDesc(i: number, field: 'addr' | 'len' | 'flags', v: bigint): bigint;
}
