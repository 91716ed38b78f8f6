/**
 * The packed virtqueue, device side: the reference model, written to be read against the
 * virtio 1.2 spec (§2.8, "Packed Virtqueues"). The C++ fast path (native/packed_ring.h)
 * performs the same steps, in the same order, with the same writes to guest memory;
 * differential tests compare the two byte for byte.
 *
 * Layout (§2.8.10, §2.8.13), queue size N (any N up to 2^15, not only powers of 2):
 *   descriptor ring           N x {addr u64, len u32, id u16, flags u16}     (16-byte aligned)
 *   driver event suppression  {off_wrap u16, flags u16}  written by the driver    (4)
 *   device event suppression  {off_wrap u16, flags u16}  written by the device    (4)
 *
 * One ring carries both directions. The driver writes available descriptors in ring order; the
 * device reads them in that order and writes used descriptors back over them, in the order it
 * finishes. Each side keeps a wrap counter (starting at 1) that flips when it passes the end of
 * the ring (§2.8.1); a descriptor is available when its AVAIL bit equals the driver's wrap
 * counter and its USED bit does not, and used when both equal the device's.
 *
 * Positions are reported as vhost-user encodes them (SET_VRING_BASE, GET_VRING_BASE): bits 0-14
 * the ring position, bit 15 the wrap counter.
 */
import { addDescriptor, type ChainWalk } from './chain-rules.js';
import type { Area, GuestMemoryRef } from './guest-memory.js';
import { descFlags, notifyEvent, type NotifyEvent, packedPos, type RingDesc } from './ring-events.js';
import { RingError, ringErrorName } from './ring-errors.js';
import { journalBegin, journalCommit } from './ring-journal.js';
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

/** §2.8.1: the availability and use bits of a descriptor's flags. */
export const DESC_F_AVAIL = 1 << 7;
export const DESC_F_USED = 1 << 15;
/** §2.8.10: event suppression flags. DESC is valid only with VIRTIO_F_EVENT_IDX. */
export const EVENT_F_ENABLE = 0;
export const EVENT_F_DISABLE = 1;
export const EVENT_F_DESC = 2;
export const WRAP_BIT = 1 << 15;

/** §2.8.1: available when AVAIL matches the wrap counter and USED does not. */
export function isAvail(flags: number, wrap: boolean): boolean {
  return ((flags & DESC_F_AVAIL) !== 0) === wrap && ((flags & DESC_F_USED) !== 0) !== wrap;
}

/** vring_need_event() (§2.7.10), on the 16-bit arithmetic both layouts use. */
function needEvent(event: number, newIdx: number, old: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

export class PackedRingRef extends RingSide implements Vring {
  /** The next descriptor to read, and the driver ring wrap counter expected there. */
  availPos: number;
  availWrap: boolean;
  /** The next position a used descriptor goes to, and the device ring wrap counter. */
  usedPos: number;
  usedWrap: boolean;
  broken = false;
  error: number = RingError.OK;
  private desc: Area | undefined;
  private driverEvent: Area | undefined;
  private deviceEvent: Area | undefined;
  /** Where each popped chain started (encoded), newest last, for rewind. */
  private starts: number[] = [];
  /** Where the chain of each buffer id started (the fault plan's desc-rewrite writes there). */
  private slotOfId: Uint16Array;
  /** This batch's fills: ring offset from usedPos of each, and where the next goes. */
  private fillAt: number[] = [];
  /** This batch's used descriptors, [id, len] each, written at flush (the shadow). */
  private fillVals: [number, number][] = [];
  /** used-wrap: flags XORed into each element's at flush (absent: none). */
  private fillFlip: number[] = [];
  private fillEnd = 0;
  /** IN_ORDER batching: the last buffer filled (id, len), written at flush. */
  private batchLast: [number, number] | undefined;
  /** setNotification's last word; a started ring waits for a kick. */
  private kicksWanted = true;

  constructor(
    private readonly mem: GuestMemoryRef,
    readonly cfg: RingConfig,
    lastAvailIdx = WRAP_BIT,
    usedIdx = WRAP_BIT,
  ) {
    super();
    this.availPos = lastAvailIdx & 0x7fff;
    this.availWrap = (lastAvailIdx & WRAP_BIT) !== 0;
    this.usedPos = usedIdx & 0x7fff;
    this.usedWrap = (usedIdx & WRAP_BIT) !== 0;
    const n = cfg.num;
    this.slotOfId = new Uint16Array(n);
    this.desc = mem.area(cfg.descVa, 16 * n);
    this.driverEvent = mem.area(cfg.availVa, 4);
    this.deviceEvent = mem.area(cfg.usedVa, 4);
    // §2.8.10.1: descriptor ring 16-byte aligned, both event suppression areas 4; at most 2^15
    // entries (§2.8), and a position past the ring is no position.
    if (
      n === 0 ||
      n > 0x8000 ||
      !this.desc ||
      !this.driverEvent ||
      !this.deviceEvent ||
      cfg.descVa & 15n ||
      cfg.availVa & 3n ||
      cfg.usedVa & 3n ||
      this.availPos >= n ||
      this.usedPos >= n
    ) {
      this.fail(RingError.RING_ADDR_INVALID);
    }
  }

  get lastAvailIdx(): number {
    return this.availPos | (this.availWrap ? WRAP_BIT : 0);
  }
  get usedIdx(): number {
    return this.usedPos | (this.usedWrap ? WRAP_BIT : 0);
  }

  break(err: number): void {
    this.fail(err);
  }

  private flagsAt(pos: number): number {
    const d = this.desc as Area;
    return d.view.getUint16(d.offset + 16 * pos + 14, true);
  }

  /**
   * Step 1, pop: up to `max` chains, in ring order (§2.8.10.2: "The device MUST start processing
   * driver descriptors in the order in which they appear in the ring").
   */
  popBurst(max: number): Element[] {
    const out: Element[] = [];
    if (this.broken) return out;
    max = Math.min(max, MAX_BURST);
    let segs = 0;
    while (out.length < max && BURST_SEGS - segs >= MAX_CHAIN_SEGS) {
      // §2.8.12: "A device MUST NOT use a descriptor unless it observes the VIRTQ_DESC_F_AVAIL
      // bit in its flags being changed": the next one is ours once it is marked available.
      if (!isAvail(this.flagsAt(this.availPos), this.availWrap)) break;
      const trail: RingDesc[] | undefined = this.onEvent ? [] : undefined;
      const r = this.readChain(trail);
      if (trail) {
        this.onEvent?.({
          ev: 'chain',
          head: typeof r === 'number' ? this.idAt(this.availPos) : r.head,
          slot: this.availPos,
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
      this.starts.push(this.lastAvailIdx);
      if (this.starts.length > this.cfg.num) this.starts.shift();
      this.slotOfId[r.head] = this.availPos;
      this.advanceAvail(r.slots);
      out.push(r);
    }
    // With EVENT_IDX the device asks for a kick once the driver makes this position available.
    // Only while the device wants kicks: at work it leaves the offset behind and the driver stops.
    if (this.cfg.eventIdx && this.kicksWanted && !this.broken) this.setDeviceOffWrap(this.lastAvailIdx);
    return out;
  }

  private advanceAvail(slots: number): void {
    this.availPos += slots;
    if (this.availPos >= this.cfg.num) {
      this.availPos -= this.cfg.num;
      this.availWrap = !this.availWrap;
    }
  }

  rewind(count: number): void {
    if (count <= 0 || count > this.starts.length) return;
    const at = this.starts[this.starts.length - count] as number;
    this.starts.length -= count;
    this.availPos = at & 0x7fff;
    this.availWrap = (at & WRAP_BIT) !== 0;
  }

  /**
   * Step 2, fill: the used descriptor of batch element `idx` for buffer `head` (its id), which
   * took `slots` descriptors; `len` bytes written. §2.8.6: "The device only writes out a single
   * used descriptor for the whole list. It then skips forward according to the number of
   * descriptors in the list." Kept aside and written, with the flags that hand it to the
   * driver, at flush: the driver polls these descriptors, and each cache line is then written
   * once per burst. Filling an element again (idx already filled) replaces it.
   */
  fill(head: number, len: number, idx: number, slots = 1): void {
    if (idx > this.fillAt.length) return;
    if (idx === this.fillAt.length) {
      // Never more used descriptors than the ring holds (a used-id "repeat" lie could ask).
      if (this.fillAt.length >= this.cfg.num || this.fillEnd + slots > this.cfg.num) return;
      this.fillAt.push(this.fillEnd);
      this.fillEnd += slots;
    }
    if (this.cfg.inOrderBatch) {
      if (idx === this.fillAt.length - 1) this.batchLast = [head & 0xffff, len >>> 0];
      return;
    }
    const pos = (this.usedPos + (this.fillAt[idx] as number)) % this.cfg.num;
    this.fillVals[idx] = [head & 0xffff, len >>> 0];
    this.onEvent?.({ ev: 'used', slot: pos, id: head & 0xffff, len: len >>> 0 });
  }

  /**
   * Step 3, flush: writes the `count` filled descriptors' ids and lengths, then hands them to
   * the driver by writing their flags: AVAIL and USED both equal to the device wrap counter at
   * each one's position (§2.8.1), and WRITE when the device wrote data (§2.8.4). The first
   * one's flags go last (§2.8.11 "Multi-buffer requests"), so the driver never sees part of
   * the batch. (The C++ path orders the ids and lengths before the flags with a release fence.)
   */
  flush(count: number): void {
    // IN_ORDER batching publishes every buffer filled (its elements were not written one by one).
    const n = this.cfg.inOrderBatch ? this.fillAt.length : Math.min(count, this.fillAt.length);
    if (n === 0) return;
    const d = this.desc as Area;
    // §2.8.9 IN_ORDER: "only writing out a single used descriptor with the Buffer ID
    // corresponding to the last descriptor in the batch", over the batch's first descriptor;
    // then skip the whole batch.
    const batch = this.cfg.inOrderBatch && this.batchLast !== undefined;
    if (batch) {
      const [id, len] = this.batchLast as [number, number];
      const at = d.offset + 16 * this.usedPos;
      d.view.setUint32(at + 8, len, true);
      d.view.setUint16(at + 12, id, true);
      this.logDesc(this.usedPos, 8, 4);
      this.onEvent?.({ ev: 'used', slot: this.usedPos, id, len });
    }
    this.batchLast = undefined;
    for (let k = 0; !batch && k < n; k++) {
      const pos = (this.usedPos + (this.fillAt[k] as number)) % this.cfg.num;
      const [id, len] = this.fillVals[k] as [number, number];
      d.view.setUint32(d.offset + 16 * pos + 8, len, true);
      d.view.setUint16(d.offset + 16 * pos + 12, id, true);
      this.logDesc(pos, 8, 4);
    }
    const advance = n === this.fillAt.length ? this.fillEnd : (this.fillAt[n] as number);
    let newPos = this.usedPos + advance;
    let newWrap = this.usedWrap;
    if (newPos >= this.cfg.num) {
      newPos -= this.cfg.num;
      newWrap = !newWrap;
    }
    const newUsed = newPos | (newWrap ? WRAP_BIT : 0);
    // ring-journal.ts: where the flush goes and what it writes, before the first flags store.
    if (this.cfg.journal) journalBegin(this.cfg.journal, newUsed, this.usedIdx, this.fillAt, batch ? 1 : n);
    const flagsOf = (k: number): [number, number] => {
      const off = this.fillAt[k] as number;
      let pos = this.usedPos + off;
      let wrap = this.usedWrap;
      if (pos >= this.cfg.num) {
        pos -= this.cfg.num;
        wrap = !wrap;
      }
      const len = d.view.getUint32(d.offset + 16 * pos + 8, true);
      return [pos, (len ? DESC_F_WRITE : 0) | (wrap ? DESC_F_AVAIL | DESC_F_USED : 0)];
    };
    for (let k = batch ? 0 : n - 1; k >= 0; k--) {
      const [pos, truth] = flagsOf(k);
      // used-wrap (a fault plan's lie): AVAIL and USED as the other wrap counter would have them.
      const flags = truth ^ (this.fillFlip[k] ?? 0);
      d.view.setUint16(d.offset + 16 * pos + 14, flags, true);
      this.logDesc(pos, 14, 2);
    }
    if (this.cfg.journal) journalCommit(this.cfg.journal, newUsed);
    this.usedPos = newPos;
    this.usedWrap = newWrap;
    this.fillAt = this.fillAt.slice(n).map((o) => o - advance);
    this.fillVals = this.fillVals.slice(n);
    this.fillFlip = this.fillFlip.slice(n);
    this.fillEnd -= advance;
    this.onEvent?.({ ev: 'flush', usedIdx: this.usedIdx, count: n });
  }

  needNotify(): boolean {
    const r = this.decideNotify();
    this.onEvent?.(r.event);
    return r.notify;
  }

  /**
   * Step 4, notify, from the driver event suppression structure (§2.8.10): DISABLE, ENABLE, or
   * (with EVENT_IDX) DESC: interrupt once the used descriptor at off_wrap has been written.
   */
  private decideNotify(): { notify: boolean; event: NotifyEvent } {
    const e = this.driverEvent as Area;
    if (this.cfg.notifyOnEmpty && this.empty()) {
      this.markSignalled();
      return { notify: true, event: notifyEvent(true, 'on-empty', this.cfg.eventIdx) };
    }
    const flags = e.view.getUint16(e.offset + 2, true) & 3;
    const byFlags = (notify: boolean) => ({
      notify,
      event: notifyEvent(notify, 'packed-flags', this.cfg.eventIdx, { availFlags: flags }),
    });
    // Without EVENT_IDX, only ENABLE and DISABLE mean anything: anything but DISABLE interrupts.
    if (!this.cfg.eventIdx) return byFlags(flags !== EVENT_F_DISABLE);
    const old = this.signalledUsed;
    const valid = this.signalledUsedValid;
    this.markSignalled();
    if (flags !== EVENT_F_DESC) return byFlags(flags !== EVENT_F_DISABLE);
    const offWrap = e.view.getUint16(e.offset, true);
    if (!valid) {
      return {
        notify: true,
        event: notifyEvent(true, 'first', true, { usedEvent: offWrap, newUsedIdx: this.usedIdx }),
      };
    }
    // The event offset and both used positions on one line: a position from the previous lap
    // of the ring (its wrap counter differs from ours) counts N less. As DPDK's vhost and the
    // Linux driver do (vhost_vring_call_packed, virtqueue_kick_prepare_packed).
    const newPos = this.usedPos;
    let oldPos = old & 0x7fff;
    if (newPos <= oldPos) oldPos -= this.cfg.num;
    let off = offWrap & 0x7fff;
    if (((offWrap & WRAP_BIT) !== 0) !== this.usedWrap) off -= this.cfg.num;
    const notify = needEvent(off & 0xffff, newPos, oldPos & 0xffff);
    return {
      notify,
      event: notifyEvent(notify, 'packed-desc', true, {
        usedEvent: offWrap,
        newUsedIdx: this.usedIdx,
        oldUsedIdx: old,
      }),
    };
  }

  /**
   * Enables or suppresses the driver's kicks through the device event suppression structure:
   * ENABLE/DISABLE, or with EVENT_IDX an event offset (DESC) at the next position to read.
   */
  setNotification(enable: boolean): void {
    this.kicksWanted = enable;
    const e = this.deviceEvent as Area;
    if (this.cfg.eventIdx) {
      if (!enable) return;
      this.setDeviceOffWrap(this.lastAvailIdx);
      e.view.setUint16(e.offset + 2, EVENT_F_DESC, true);
      this.logDevice(2, 2);
      this.onEvent?.({ ev: 'kicks', enabled: true, how: `device event: DESC at ${packedPos(this.lastAvailIdx)}` });
      return;
    }
    e.view.setUint16(e.offset + 2, enable ? EVENT_F_ENABLE : EVENT_F_DISABLE, true);
    this.logDevice(2, 2);
    this.onEvent?.({ ev: 'kicks', enabled: enable, how: `device event: ${enable ? 'ENABLE' : 'DISABLE'}` });
  }

  empty(): boolean {
    return this.broken || !isAvail(this.flagsAt(this.availPos), this.availWrap);
  }

  state(): RingState {
    return {
      lastAvailIdx: this.lastAvailIdx,
      shadowAvailIdx: this.lastAvailIdx,
      usedIdx: this.usedIdx,
      signalledUsed: this.signalledUsed,
      signalledUsedValid: this.signalledUsedValid,
      broken: this.broken,
      error: this.error,
    };
  }

  /** Another buffer id than `head` (used-id "not-a-head"). */
  /**
   * used-wrap (a fault plan's lie): element `idx` of the batch is written with AVAIL and USED as
   * the other wrap counter would set them, so the driver does not see it used (§2.8.1).
   */
  flipWrap(idx: number): void {
    if (idx >= this.fillAt.length) return;
    this.fillFlip[idx] = DESC_F_AVAIL | DESC_F_USED;
  }

  nextOf(head: number): number {
    return (head + 1) % this.cfg.num;
  }

  /** Writes one field of the first descriptor of buffer `id`'s chain; returns the old value. */
  rewriteDesc(id: number, field: 'addr' | 'len' | 'flags', v: bigint): bigint {
    const d = this.desc as Area;
    const pos = this.slotOfId[id % this.cfg.num] as number;
    const [fieldAt, size] = { addr: [0, 8], len: [8, 4], flags: [14, 2] }[field] as [number, number];
    const at = d.offset + 16 * pos + fieldAt;
    let old: bigint;
    if (size === 8) {
      old = d.view.getBigUint64(at, true);
      d.view.setBigUint64(at, BigInt.asUintN(64, v), true);
    } else if (size === 4) {
      old = BigInt(d.view.getUint32(at, true));
      d.view.setUint32(at, Number(BigInt.asUintN(32, v)), true);
    } else {
      old = BigInt(d.view.getUint16(at, true));
      d.view.setUint16(at, Number(BigInt.asUintN(16, v)), true);
    }
    this.logDesc(pos, fieldAt, size);
    return old;
  }

  private fail(err: number): void {
    this.broken = true;
    this.error = err;
  }

  private markSignalled(): void {
    this.signalledUsed = this.usedIdx;
    this.signalledUsedValid = true;
  }

  private setDeviceOffWrap(v: number): void {
    const e = this.deviceEvent as Area;
    e.view.setUint16(e.offset, v, true);
    this.logDevice(0, 2);
  }

  /**
   * The dirty log (live migration): the packed ring has no used ring, so when the vring asked
   * for ring logging (VHOST_VRING_F_LOG) the device's writes to the descriptor ring and its
   * event area are logged at their guest physical addresses, as DPDK's vhost does.
   */
  private logDesc(pos: number, fieldAt: number, len: number): void {
    if (!this.log || this.cfg.logGuestAddr === undefined) return;
    const gpa = this.mem.vaToGpa(this.cfg.descVa + BigInt(16 * pos + fieldAt));
    if (gpa !== undefined) this.log.mark(gpa, len);
  }
  private logDevice(at: number, len: number): void {
    if (!this.log || this.cfg.logGuestAddr === undefined) return;
    const gpa = this.mem.vaToGpa(this.cfg.usedVa + BigInt(at));
    if (gpa !== undefined) this.log.mark(gpa, len);
  }

  private idAt(pos: number): number {
    const d = this.desc as Area;
    return d.view.getUint16(d.offset + 16 * pos + 12, true);
  }

  /** Walks the chain starting at availPos (§2.8.6 chains via NEXT, §2.8.7 indirect tables). */
  private readChain(trail?: RingDesc[]): Element | number {
    const n = this.cfg.num;
    const d = this.desc as Area;
    const e: Element = { head: 0, out: [], in: [], outLen: 0, inLen: 0, slots: 0 };
    const walk: ChainWalk = { e, segs: [], sawWritable: false };
    let pos = this.availPos;
    let wrap = this.availWrap;
    let traced = 0;
    const trace = (addr: bigint, len: number, flags: number, id: number, parent?: RingDesc) => {
      if (!trail || traced++ >= TRACE_MAX_DESCS) return;
      const t: RingDesc = { addr: `0x${addr.toString(16)}`, len, flags: descFlags(flags), ...(parent ? {} : { id }) };
      if (parent) (parent.indirect ??= []).push(t);
      else trail.push(t);
    };
    for (;;) {
      const at = d.offset + 16 * pos;
      const addr = d.view.getBigUint64(at, true);
      const len = d.view.getUint32(at + 8, true);
      const id = d.view.getUint16(at + 12, true);
      const flags = d.view.getUint16(at + 14, true);
      e.slots++;
      trace(addr, len, flags, id);
      // §2.8.6: "all flags, including VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE
      // must be set/cleared correctly in all descriptors in the list"; and the driver makes the
      // first available only after the rest (§2.8.13.2). A later one not available for the wrap
      // counter of its position was never made available: a chain running past what the driver
      // wrote, or over the ring's end onto itself (which is how a list longer than the ring shows).
      if (e.slots > 1 && !isAvail(flags, wrap)) return RingError.DESC_NOT_AVAILABLE;
      if (flags & DESC_F_INDIRECT) {
        // §2.8.13.4: INDIRECT only when negotiated, never in a list linked by NEXT.
        if (!this.cfg.indirect) return RingError.INDIRECT_NOT_NEGOTIATED;
        if (flags & DESC_F_NEXT || e.slots > 1) return RingError.INDIRECT_NESTED;
        // §2.8.7: the table holds len / 16 descriptors: a whole number of them, at least one.
        if (len === 0 || len % 16 !== 0) return RingError.INDIRECT_BAD_LEN;
        const t = this.mem.gpaViewContiguous(addr, BigInt(len));
        if (!t) return RingError.ADDR_OUT_OF_MEMORY;
        const tv = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
        const parent = trail?.[trail.length - 1];
        for (let k = 0; k < len / 16; k++) {
          const ia = t.offset + 16 * k;
          const iaddr = tv.getBigUint64(ia, true);
          const ilen = tv.getUint32(ia + 8, true);
          const iflags = tv.getUint16(ia + 14, true);
          trace(iaddr, ilen, iflags, 0, parent);
          // §2.8.7: "The VIRTQ_DESC_F_WRITE flags bit is the only valid flag for descriptors in
          // the indirect table. Others are reserved and are ignored by the device."
          const bad = addDescriptor(this.mem, walk, iaddr, ilen, (iflags & DESC_F_WRITE) !== 0);
          if (bad !== undefined) return bad;
        }
      } else {
        const bad = addDescriptor(this.mem, walk, addr, len, (flags & DESC_F_WRITE) !== 0);
        if (bad !== undefined) return bad;
      }
      if (!(flags & DESC_F_NEXT)) {
        // §2.8.6: "Buffer ID is included in the last descriptor in the list." The device echoes
        // it; an id beyond the queue size names no buffer a driver can have (the spec's
        // example driver asserts id < size; Linux and DPDK allocate ids below it).
        if (id >= n) return RingError.ID_OUT_OF_RANGE;
        e.head = id;
        return e;
      }
      if (++pos === n) {
        pos = 0;
        wrap = !wrap;
      }
    }
  }
}
