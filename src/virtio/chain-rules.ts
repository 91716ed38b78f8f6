/**
 * The rule every descriptor of a chain is held to, split or packed alike (the twin of
 * native/chain_rules.h): one buffer element (addr, len, writable) added to the chain, or the
 * error that breaks the ring.
 */
import type { GuestMemoryRef, Segment } from './guest-memory.js';
import { RingError } from './ring-errors.js';
import { type Element, MAX_CHAIN_SEGS } from './ring-types.js';

/** A chain being walked: the element so far, its segments, whether a writable one was seen. */
export interface ChainWalk {
  e: Element;
  segs: Segment[];
  sawWritable: boolean;
}

/**
 * Adds one buffer to the chain. Checked in this order: zero length, readable after writable,
 * the chain's 4 GiB, guest memory. Returns a RingError, or undefined when the buffer is added.
 */
export function addDescriptor(
  mem: GuestMemoryRef,
  w: ChainWalk,
  addr: bigint,
  len: number,
  writable: boolean,
): number | undefined {
  if (len === 0) return RingError.ZERO_LEN;
  // §2.7.4.2 (split) and §2.8.13.2 (packed): "The driver MUST place any device-writable
  // descriptor elements after any device-readable descriptor elements."
  if (!writable && w.sawWritable) return RingError.READABLE_AFTER_WRITABLE;
  w.sawWritable ||= writable;
  if (writable) w.e.inLen += len;
  else w.e.outLen += len;
  if (w.e.inLen + w.e.outLen > 0xffff_ffff) return RingError.CHAIN_TOO_LONG;
  const before = w.segs.length;
  const r = mem.split(addr, BigInt(len), w.segs, MAX_CHAIN_SEGS);
  if (r !== 'ok') return r === 'too-many' ? RingError.TOO_MANY_SEGMENTS : RingError.ADDR_OUT_OF_MEMORY;
  (writable ? w.e.in : w.e.out).push(...w.segs.slice(before));
  return undefined;
}
