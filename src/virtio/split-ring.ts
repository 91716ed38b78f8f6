/**
 * The split virtqueue, device side: the reference model, written to be read against the
 * virtio 1.2 spec (§2.7). The C++ fast path (native/split_ring.h) performs the same steps, in
 * the same order, with the same writes to guest memory; differential tests compare the two
 * byte for byte. This model also runs the `--datapath ts` learning mode.
 *
 * Layout (§2.7.5-§2.7.8), queue size N:
 *   descriptor table  N x {addr u64, len u32, flags u16, next u16}          (16-byte aligned)
 *   available ring    {flags u16, idx u16, ring[N] u16, used_event u16}     (2-byte aligned)
 *   used ring         {flags u16, idx u16, ring[N] {id u32, len u32}, avail_event u16} (4)
 *
 * The device's steps, in libvhost-user's words:
 *   1. pop:    read avail->idx; for each new entry walk the descriptor chain it names
 *   2. fill:   write a used element {id: head, len: bytes written} for each chain consumed
 *   3. flush:  publish them by storing used->idx once
 *   4. notify: decide, from used_event or the NO_INTERRUPT flag, whether to interrupt
 */
import { addDescriptor, type ChainWalk } from './chain-rules.js';
import type { Area, GuestMemoryRef } from './guest-memory.js';
import { descFlags, notifyEvent, type NotifyEvent, type NotifyReason, type RingDesc } from './ring-events.js';
import { RingError, ringErrorName } from './ring-errors.js';

import {
  BURST_SEGS,
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  type Element,
  MAX_BURST,
  MAX_CHAIN_SEGS,
  type RingConfig,
  type RingState,
  TRACE_MAX_DESCS,
  RingSide,
  type Vring,
} from './ring-types.js';

export const AVAIL_F_NO_INTERRUPT = 1;
export const USED_F_NO_NOTIFY = 1;

const u16 = (x: number): number => x & 0xffff;

/** vring_need_event() (§2.7.10): has new_idx moved past event since old? */
export function needEvent(event: number, newIdx: number, old: number): boolean {
  return u16(newIdx - event - 1) < u16(newIdx - old);
}

export class SplitRingRef extends RingSide implements Vring {
  lastAvailIdx = 0;
  shadowAvailIdx = 0;
  usedIdx = 0;
  broken = false;
  error: number = RingError.OK;
  /** setNotification's last word; a started ring waits for a kick. */
  private kicksWanted = true;
  private desc: Area | undefined;
  private avail: Area | undefined;
  private used: Area | undefined;

  constructor(
    private readonly mem: GuestMemoryRef,
    readonly cfg: RingConfig,
    lastAvailIdx = 0,
    usedIdx = 0,
  ) {
    super();
    this.lastAvailIdx = this.shadowAvailIdx = lastAvailIdx;
    this.usedIdx = usedIdx;
    const n = cfg.num;
    this.desc = mem.area(cfg.descVa, 16 * n);
    this.avail = mem.area(cfg.availVa, 6 + 2 * n);
    this.used = mem.area(cfg.usedVa, 6 + 8 * n);
    // §2.7: descriptor table 16-byte aligned, available ring 2, used ring 4.
    if (n === 0 || !this.desc || !this.avail || !this.used || cfg.descVa & 15n || cfg.availVa & 1n || cfg.usedVa & 3n) {
      this.fail(RingError.RING_ADDR_INVALID);
    }
  }

  /** Marks the ring broken from outside the walk (a memory fault): it pops nothing more. */
  break(err: number): void {
    this.fail(err);
  }

  availIdx(): number {
    const a = this.avail as Area;
    return a.view.getUint16(a.offset + 2, true);
  }
  availFlags(): number {
    const a = this.avail as Area;
    return a.view.getUint16(a.offset, true);
  }
  usedEvent(): number {
    const a = this.avail as Area;
    return a.view.getUint16(a.offset + 4 + 2 * this.cfg.num, true);
  }

  /**
   * Step 1, pop: up to `max` chains. On a driver violation the ring is marked broken and
   * `error` set; chains popped before the bad one are still returned.
   */
  popBurst(max: number): Element[] {
    const out: Element[] = [];
    if (this.broken) return out;
    max = Math.min(max, MAX_BURST);
    let segs = 0;
    while (out.length < max && BURST_SEGS - segs >= MAX_CHAIN_SEGS) {
      if (this.lastAvailIdx === this.shadowAvailIdx) {
        this.shadowAvailIdx = this.availIdx();
        this.onEvent?.({
          ev: 'avail',
          availIdx: this.shadowAvailIdx,
          lastAvailIdx: this.lastAvailIdx,
          new: u16(this.shadowAvailIdx - this.lastAvailIdx),
        });
        // §2.7.13.3: the driver moves idx forward by at most the queue size past what we read.
        if (u16(this.shadowAvailIdx - this.lastAvailIdx) > this.cfg.num) {
          this.fail(RingError.AVAIL_IDX_JUMP);
          break;
        }
        if (this.lastAvailIdx === this.shadowAvailIdx) break;
      }
      const trail: RingDesc[] | undefined = this.onEvent ? [] : undefined;
      const r = this.readChain(trail);
      if (trail) {
        this.onEvent?.({
          ev: 'chain',
          head: typeof r === 'number' ? this.peekHead() : r.head,
          descs: trail,
          outLen: typeof r === 'number' ? 0 : r.outLen,
          inLen: typeof r === 'number' ? 0 : r.inLen,
          ...(typeof r === 'number' ? { error: ringErrorName(r) } : {}),
        });
      }
      if (typeof r === 'number') {
        this.fail(r);
        break;
      }
      segs += r.out.length + r.in.length;
      this.lastAvailIdx = u16(this.lastAvailIdx + 1);
      out.push(r);
    }
    // §2.7.10: with EVENT_IDX, ask for a kick once the driver passes avail_event.
    // Only while the device wants kicks: at work it leaves avail_event behind and the driver
    // stops kicking (as Linux's vhost does).
    if (this.cfg.eventIdx && this.kicksWanted && !this.broken) this.setAvailEvent(this.lastAvailIdx);
    return out;
  }

  /** Gives back the last `count` popped chains (not yet filled). */
  rewind(count: number): void {
    this.lastAvailIdx = u16(this.lastAvailIdx - count);
  }

  /** IN_ORDER batching: the last element filled in this batch, written at flush. */
  private batchLast: { head: number; len: number; idx: number } | undefined;

  /** Step 2, fill: used element `idx` of the batch: chain `head`, `len` bytes written. */
  fill(head: number, len: number, idx: number, _slots = 1): void {
    if (this.cfg.inOrderBatch) {
      if (!this.batchLast || idx >= this.batchLast.idx) this.batchLast = { head, len, idx };
      return;
    }
    this.writeUsed(head, len, idx);
  }

  private writeUsed(head: number, len: number, idx: number): void {
    const u = this.used as Area;
    const slot = u16(this.usedIdx + idx) % this.cfg.num;
    const at = u.offset + 4 + 8 * slot;
    u.view.setUint32(at, head, true);
    u.view.setUint32(at + 4, len >>> 0, true);
    this.logUsed(4 + 8 * slot, 8);
    this.onEvent?.({ ev: 'used', slot, id: head, len: len >>> 0 });
  }

  /**
   * Step 3, flush: publish `count` used elements with one store of used->idx. (The C++ path
   * makes it a store-release: entries and buffer contents become visible first.)
   */
  flush(count: number): void {
    // §2.7.9: "the device can ... only write out a single used ring entry with the id
    // corresponding to the head entry of the descriptor chain describing the last buffer in the
    // batch", in the batch's first slot, and move used->idx by the size of the batch.
    if (this.cfg.inOrderBatch && this.batchLast && count > 0)
      this.writeUsed(this.batchLast.head, this.batchLast.len, 0);
    this.batchLast = undefined;
    this.usedIdx = u16(this.usedIdx + count);
    const u = this.used as Area;
    u.view.setUint16(u.offset + 2, this.usedIdx, true);
    this.logUsed(2, 2);
    this.onEvent?.({ ev: 'flush', usedIdx: this.usedIdx, count });
  }

  /** Step 4, notify: does the driver want an interrupt for what was flushed? */
  needNotify(): boolean {
    const r = this.decideNotify();
    this.onEvent?.(r.event);
    return r.notify;
  }

  private decideNotify(): { notify: boolean; event: NotifyEvent } {
    const ev = (notify: boolean, reason: NotifyReason, n: Parameters<typeof notifyEvent>[3] = {}) => ({
      notify,
      event: notifyEvent(notify, reason, this.cfg.eventIdx, n),
    });
    // VIRTIO_F_NOTIFY_ON_EMPTY: interrupt when the ring ran empty, whatever the driver asked.
    if (this.cfg.notifyOnEmpty && this.availIdx() === this.lastAvailIdx) {
      this.markSignalled();
      return ev(true, 'on-empty');
    }
    // §2.7.7: without EVENT_IDX the driver's flags decide.
    if (!this.cfg.eventIdx) {
      const availFlags = this.availFlags();
      return ev((availFlags & AVAIL_F_NO_INTERRUPT) === 0, 'flags', { availFlags });
    }
    // §2.7.10: with EVENT_IDX, interrupt when used->idx passed used_event since the last one.
    const old = this.signalledUsed;
    const valid = this.signalledUsedValid;
    this.markSignalled();
    const usedEvent = this.usedEvent();
    if (!valid) return ev(true, 'first', { usedEvent, newUsedIdx: this.usedIdx });
    const notify = needEvent(usedEvent, this.usedIdx, old);
    return ev(notify, 'event-idx', { usedEvent, newUsedIdx: this.usedIdx, oldUsedIdx: old });
  }

  /** Enables or suppresses the driver's kicks (avail_event, or used->flags NO_NOTIFY). */
  setNotification(enable: boolean): void {
    this.kicksWanted = enable;
    if (this.cfg.eventIdx) {
      if (enable) {
        this.setAvailEvent(this.availIdx());
        this.onEvent?.({ ev: 'kicks', enabled: true, how: `avail_event = ${this.availIdx()}` });
      }
      return;
    }
    this.onEvent?.({ ev: 'kicks', enabled: enable, how: `used->flags NO_NOTIFY ${enable ? 'cleared' : 'set'}` });
    const u = this.used as Area;
    const v = u.view.getUint16(u.offset, true);
    u.view.setUint16(u.offset, enable ? v & ~USED_F_NO_NOTIFY : v | USED_F_NO_NOTIFY, true);
    this.logUsed(0, 2);
  }

  empty(): boolean {
    return this.availIdx() === this.lastAvailIdx;
  }

  state(): RingState {
    return {
      lastAvailIdx: this.lastAvailIdx,
      shadowAvailIdx: this.shadowAvailIdx,
      usedIdx: this.usedIdx,
      signalledUsed: this.signalledUsed,
      signalledUsedValid: this.signalledUsedValid,
      broken: this.broken,
      error: this.error,
    };
  }

  private fail(err: number): void {
    this.broken = true;
    this.error = err;
  }

  private markSignalled(): void {
    this.signalledUsed = this.usedIdx;
    this.signalledUsedValid = true;
  }

  private setAvailEvent(v: number): void {
    const u = this.used as Area;
    u.view.setUint16(u.offset + 4 + 8 * this.cfg.num, v, true);
    this.logUsed(4 + 8 * this.cfg.num, 2);
  }

  /**
   * vhost-user.rst "Migration": "when logging modifications to the used ring (when
   * VHOST_VRING_F_LOG is set for this ring), log_guest_addr should be used to calculate the
   * log offset: the write to first byte of the used ring is logged at this offset".
   */
  private logUsed(offset: number, len: number): void {
    if (this.log && this.cfg.logGuestAddr !== undefined) this.log.mark(this.cfg.logGuestAddr + BigInt(offset), len);
  }

  private peekHead(): number {
    const a = this.avail as Area;
    return a.view.getUint16(a.offset + 4 + 2 * (this.lastAvailIdx % this.cfg.num), true);
  }

  /** Walks the chain at the current avail slot (§2.7.5; indirect tables §2.7.5.3). */
  // The fault plan's view of the descriptor table (used-id "not-a-head", desc-rewrite); the
  // device itself reads a chain once, in readChain.

  /** The descriptor after `head` in its chain (§2.7.5 VIRTQ_DESC_F_NEXT), or head+1 without one. */
  /** used-wrap: a split ring's used element has no flags to lie with. */
  flipWrap(_idx: number): void {}

  nextOf(head: number): number {
    const t = this.desc as Area;
    const at = t.offset + 16 * (head % this.cfg.num);
    const next = t.view.getUint16(at + 14, true);
    return t.view.getUint16(at + 12, true) & DESC_F_NEXT && next < this.cfg.num ? next : (head + 1) % this.cfg.num;
  }

  /** Writes one field of descriptor `i` in guest memory; returns the old value. */
  rewriteDesc(i: number, field: 'addr' | 'len' | 'flags', v: bigint): bigint {
    const t = this.desc as Area;
    const [fieldAt, size] = { addr: [0, 8], len: [8, 4], flags: [12, 2] }[field] as [number, number];
    const at = t.offset + 16 * (i % this.cfg.num) + fieldAt;
    let old: bigint;
    if (size === 8) {
      old = t.view.getBigUint64(at, true);
      t.view.setBigUint64(at, BigInt.asUintN(64, v), true);
    } else if (size === 4) {
      old = BigInt(t.view.getUint32(at, true));
      t.view.setUint32(at, Number(BigInt.asUintN(32, v)), true);
    } else {
      old = BigInt(t.view.getUint16(at, true));
      t.view.setUint16(at, Number(BigInt.asUintN(16, v)), true);
    }
    // A write to guest memory like any other: the dirty log hears of it.
    const gpa = this.log ? this.mem.vaToGpa(this.cfg.descVa + BigInt(at - t.offset)) : undefined;
    if (gpa !== undefined) this.log?.mark(gpa, size);
    return old;
  }

  private readChain(trail?: RingDesc[]): Element | number {
    const a = this.avail as Area;
    const head = a.view.getUint16(a.offset + 4 + 2 * (this.lastAvailIdx % this.cfg.num), true);
    if (head >= this.cfg.num) return RingError.HEAD_OUT_OF_RANGE;
    const e: Element = { head, out: [], in: [], outLen: 0, inLen: 0, slots: 1 };
    let table = this.desc as Area;
    let tableSize = this.cfg.num;
    let i = head;
    let count = 0;
    let inIndirect = false;
    let traced = 0;
    const walk: ChainWalk = { e, segs: [], sawWritable: false };
    for (;;) {
      const at = table.offset + 16 * i;
      const addr = table.view.getBigUint64(at, true);
      const len = table.view.getUint32(at + 8, true);
      const flags = table.view.getUint16(at + 12, true);
      const next = table.view.getUint16(at + 14, true);
      // A chain event carries at most TRACE_MAX_DESCS descriptors, direct and indirect together
      // (as native/observe.h kObsMaxDescs: a trace record has a bounded size).
      if (trail && traced++ < TRACE_MAX_DESCS) {
        const d: RingDesc = {
          addr: `0x${addr.toString(16)}`,
          len,
          flags: descFlags(flags),
          ...(flags & DESC_F_NEXT ? { next } : {}),
        };
        if (inIndirect) {
          const parent = trail[trail.length - 1] as RingDesc;
          parent.indirect ??= [];
          parent.indirect.push(d);
        } else trail.push(d);
      }
      if (flags & DESC_F_INDIRECT) {
        // §2.7.5.3.1: the driver MUST NOT set INDIRECT and NEXT together, nor nest tables.
        if (!this.cfg.indirect) return RingError.INDIRECT_NOT_NEGOTIATED;
        if (inIndirect || flags & DESC_F_NEXT) return RingError.INDIRECT_NESTED;
        if (len === 0 || len % 16 !== 0) return RingError.INDIRECT_BAD_LEN;
        const t = this.mem.gpaViewContiguous(addr, BigInt(len));
        if (!t) return RingError.ADDR_OUT_OF_MEMORY;
        table = { view: new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength), offset: t.offset };
        tableSize = len / 16;
        i = 0;
        count = 0;
        inIndirect = true;
        continue;
      }
      if (++count > tableSize) return RingError.DESC_LOOP;
      const bad = addDescriptor(this.mem, walk, addr, len, (flags & DESC_F_WRITE) !== 0);
      if (bad !== undefined) return bad;
      if (!(flags & DESC_F_NEXT)) break;
      if (next >= tableSize) return RingError.NEXT_OUT_OF_RANGE;
      i = next;
    }
    return e;
  }
}
