/**
 * The driver side of a split ring, for tests: lays out descriptors, indirect tables and avail
 * entries in guest memory, well formed or broken on purpose. Every write goes to all the
 * memories it was given, so two implementations can be run over identical bytes.
 */
import { DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE } from '../../src/virtio/ring-types.js';

export interface DescSpec {
  addr: bigint;
  len: number;
  write: boolean;
}

export interface Layout {
  num: number;
  /** Offsets of the areas in the first memory region, and that region's GPA and VA. */
  descOff: number;
  availOff: number;
  usedOff: number;
  gpaBase: bigint;
  vaBase: bigint;
}

export class RingDriver {
  private readonly views: DataView[];
  availIdx = 0;
  private nextFreeDesc = 0;
  private indirectCursor: number;

  constructor(
    mems: Uint8Array[],
    readonly layout: Layout,
    /** GPA of an area (in the first region) for indirect tables. */
    private readonly indirectGpa: bigint,
    private readonly indirectOff: number,
  ) {
    this.views = mems.map((m) => new DataView(m.buffer, m.byteOffset, m.byteLength));
    this.indirectCursor = 0;
  }

  get descVa(): bigint {
    return this.layout.vaBase + BigInt(this.layout.descOff);
  }
  get availVa(): bigint {
    return this.layout.vaBase + BigInt(this.layout.availOff);
  }
  get usedVa(): bigint {
    return this.layout.vaBase + BigInt(this.layout.usedOff);
  }

  private u16(off: number, v: number) {
    for (const d of this.views) d.setUint16(off, v & 0xffff, true);
  }
  private u32(off: number, v: number) {
    for (const d of this.views) d.setUint32(off, v >>> 0, true);
  }
  private u64(off: number, v: bigint) {
    for (const d of this.views) d.setBigUint64(off, BigInt.asUintN(64, v), true);
  }

  writeDesc(tableOff: number, i: number, addr: bigint, len: number, flags: number, next: number): void {
    const at = tableOff + 16 * i;
    this.u64(at, addr);
    this.u32(at + 8, len);
    this.u16(at + 12, flags);
    this.u16(at + 14, next);
  }

  /** Allocates `n` descriptor slots round-robin; returns their indices. */
  allocDescs(n: number): number[] {
    const out: number[] = [];
    for (let k = 0; k < n; k++) {
      out.push(this.nextFreeDesc);
      this.nextFreeDesc = (this.nextFreeDesc + 1) % this.layout.num;
    }
    return out;
  }

  /** Writes a direct chain; returns its head. */
  addChain(descs: DescSpec[]): number {
    const ids = this.allocDescs(descs.length);
    descs.forEach((d, k) => {
      const last = k === descs.length - 1;
      const flags = (d.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT);
      this.writeDesc(this.layout.descOff, ids[k] as number, d.addr, d.len, flags, last ? 0 : (ids[k + 1] as number));
    });
    return ids[0] as number;
  }

  /** Writes a chain whose only descriptor points to an indirect table holding `descs`. */
  addIndirect(descs: DescSpec[], opts: { tableLen?: number; extraFlags?: number } = {}): number {
    const tableOff = this.indirectOff + this.indirectCursor;
    const tableGpa = this.indirectGpa + BigInt(this.indirectCursor);
    this.indirectCursor = (this.indirectCursor + 16 * 16) % (16 * 16 * 8);
    descs.forEach((d, k) => {
      const last = k === descs.length - 1;
      const flags = (d.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT);
      this.writeDesc(tableOff, k, d.addr, d.len, flags, last ? 0 : k + 1);
    });
    const [head] = this.allocDescs(1);
    this.writeDesc(
      this.layout.descOff,
      head as number,
      tableGpa,
      opts.tableLen ?? 16 * descs.length,
      DESC_F_INDIRECT | (opts.extraFlags ?? 0),
      0,
    );
    return head as number;
  }

  /** Reads descriptor `i` of the main table back (what the device may have changed). */
  readDesc(i: number): { addr: bigint; len: number; flags: number; next: number } {
    const d = this.views[0] as DataView;
    const at = this.layout.descOff + 16 * (i % this.layout.num);
    return {
      addr: d.getBigUint64(at, true),
      len: d.getUint32(at + 8, true),
      flags: d.getUint16(at + 12, true),
      next: d.getUint16(at + 14, true),
    };
  }

  /** Raw descriptor write into the main table (for broken shapes). */
  rawDesc(i: number, addr: bigint, len: number, flags: number, next: number): void {
    this.writeDesc(this.layout.descOff, i % this.layout.num, addr, len, flags, next);
  }

  /** Puts `head` in the next avail slot (not yet published). */
  offer(head: number): void {
    this.u16(this.layout.availOff + 4 + 2 * (this.availIdx % this.layout.num), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  /** Publishes avail->idx (optionally a bogus one). */
  publish(idx = this.availIdx): void {
    this.u16(this.layout.availOff + 2, idx);
  }

  setAvailFlags(v: number): void {
    this.u16(this.layout.availOff, v);
  }
  /** used->idx as the device published it. */
  usedIdx(): number {
    return (this.views[0] as DataView).getUint16(this.layout.usedOff + 2, true);
  }

  /** Used element `i` (ring slot i % num): {id, len}. */
  usedElem(i: number): { id: number; len: number } {
    const v = this.views[0] as DataView;
    const at = this.layout.usedOff + 4 + 8 * (i % this.layout.num);
    return { id: v.getUint32(at, true), len: v.getUint32(at + 4, true) };
  }

  /** used->flags as the device wrote it (VRING_USED_F_NO_NOTIFY: no kicks wanted). */
  usedFlags(): number {
    return (this.views[0] as DataView).getUint16(this.layout.usedOff, true);
  }

  /** avail_event as the device wrote it (the u16 after the used ring, EVENT_IDX). */
  availEvent(): number {
    return (this.views[0] as DataView).getUint16(this.layout.usedOff + 4 + 8 * this.layout.num, true);
  }

  setUsedEvent(v: number): void {
    this.u16(this.layout.availOff + 4 + 2 * this.layout.num, v);
  }
}
