/**
 * The driver side of a packed ring (virtio 1.2 §2.8), for tests: writes descriptors in ring
 * order with the AVAIL/USED bits of its wrap counter, makes each chain's first descriptor
 * available last (at `publish`), and reads used descriptors back as a driver does (skipping each
 * buffer's descriptor count). Well formed or broken on purpose. Every write goes to all the
 * memories it was given, so two implementations can be run over identical bytes.
 */
import { DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE } from '../../src/virtio/ring-types.js';
import { DESC_F_AVAIL, DESC_F_USED, EVENT_F_DESC } from '../../src/virtio/packed-ring.js';
import type { DescSpec, Layout } from './ring-driver.js';

export class PackedDriver {
  private readonly views: DataView[];
  nextAvail: number;
  availWrap: boolean;
  nextUsed: number;
  usedWrap: boolean;
  private nextId = 0;
  private indirectCursor = 0;
  /** First descriptors written but not yet made available: [position, flags]. */
  private pending: [number, number][] = [];
  /** Descriptors each buffer id took (the driver's sgs[id], §2.8.21's example). */
  private slotsOf = new Map<number, number>();
  /** Buffers made available and not yet seen used (a zeroed descriptor looks used at wrap 0). */
  private inFlight = 0;
  /** Buffer ids made available, oldest first (IN_ORDER: what one used id stands for). */
  private order: number[] = [];
  /** The id of each pending first descriptor. */
  private pendingIds: number[] = [];

  constructor(
    mems: Uint8Array[],
    readonly layout: Layout,
    private readonly indirectGpa: bigint,
    private readonly indirectOff: number,
    /** Where both sides start, as vhost-user encodes it (position | wrap << 15). */
    start = 0x8000,
    /** VIRTIO_F_IN_ORDER: a used id stands for every buffer made available up to it. */
    private readonly inOrder = false,
  ) {
    this.views = mems.map((m) => new DataView(m.buffer, m.byteOffset, m.byteLength));
    this.nextAvail = this.nextUsed = start & 0x7fff;
    this.availWrap = this.usedWrap = (start & 0x8000) !== 0;
  }

  get descVa(): bigint {
    return this.layout.vaBase + BigInt(this.layout.descOff);
  }
  /** The driver area: driver event suppression. */
  get availVa(): bigint {
    return this.layout.vaBase + BigInt(this.layout.availOff);
  }
  /** The device area: device event suppression. */
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
  private write(off: number, addr: bigint, len: number, id: number, flags?: number) {
    this.u64(off, addr);
    this.u32(off + 8, len);
    this.u16(off + 12, id);
    if (flags !== undefined) this.u16(off + 14, flags);
  }

  /** §2.8.1: AVAIL = the driver wrap counter, USED = its inverse (`wrong` swaps them). */
  private availBits(wrong = false): number {
    return this.availWrap !== wrong ? DESC_F_AVAIL : DESC_F_USED;
  }

  private step(): void {
    if (++this.nextAvail === this.layout.num) {
      this.nextAvail = 0;
      this.availWrap = !this.availWrap;
    }
  }

  /** Writes a chain (its first descriptor made available at `publish`); returns its buffer id. */
  addChain(descs: DescSpec[], id = this.allocId()): number {
    descs.forEach((d, k) => {
      const last = k === descs.length - 1;
      const flags = (d.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT) | this.availBits();
      const at = this.layout.descOff + 16 * this.nextAvail;
      if (k === 0) {
        this.write(at, d.addr, d.len, id);
        this.pending.push([this.nextAvail, flags]);
        this.pendingIds.push(id);
      } else this.write(at, d.addr, d.len, id, flags);
      this.step();
    });
    this.slotsOf.set(id, descs.length);
    return id;
  }

  /** One ring descriptor pointing to an indirect table holding `descs`. */
  addIndirect(
    descs: DescSpec[],
    opts: { tableLen?: number; extraFlags?: number; tableExtraFlags?: number } = {},
  ): number {
    const tableOff = this.indirectOff + this.indirectCursor;
    const tableGpa = this.indirectGpa + BigInt(this.indirectCursor);
    this.indirectCursor = (this.indirectCursor + 16 * 16) % (16 * 16 * 8);
    descs.forEach((d, k) =>
      this.write(tableOff + 16 * k, d.addr, d.len, 0, (d.write ? DESC_F_WRITE : 0) | (opts.tableExtraFlags ?? 0)),
    );
    const id = this.allocId();
    this.write(this.layout.descOff + 16 * this.nextAvail, tableGpa, opts.tableLen ?? 16 * descs.length, id);
    this.pending.push([this.nextAvail, DESC_F_INDIRECT | (opts.extraFlags ?? 0) | this.availBits()]);
    this.pendingIds.push(id);
    this.step();
    this.slotsOf.set(id, 1);
    return id;
  }

  /**
   * One raw descriptor: `flags` (NEXT, WRITE, INDIRECT) and the buffer `id` as given; its
   * AVAIL/USED bits right, or (`wrongWrap`) those of the other lap. A first descriptor (`first`)
   * waits for `publish`; a later one of a chain is written at once.
   */
  raw(addr: bigint, len: number, flags: number, id: number, opts: { wrongWrap?: boolean; first?: boolean } = {}): void {
    const f = (flags & 7) | this.availBits(opts.wrongWrap);
    const at = this.layout.descOff + 16 * this.nextAvail;
    if (opts.first ?? true) {
      this.write(at, addr, len, id);
      this.pending.push([this.nextAvail, f]);
      this.pendingIds.push(id);
    } else this.write(at, addr, len, id, f);
    this.slotsOf.set(id, 1);
    this.step();
  }

  /** Makes the chains written so far available: their first descriptors' flags, in order. */
  publish(): void {
    for (const [pos, flags] of this.pending) this.u16(this.layout.descOff + 16 * pos + 14, flags);
    this.inFlight += this.pending.length;
    this.order.push(...this.pendingIds);
    this.pending = [];
    this.pendingIds = [];
  }

  private allocId(): number {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) % this.layout.num;
    return id;
  }

  /** Driver event suppression: off_wrap = v with flags DESC (what a driver does with EVENT_IDX). */
  setUsedEvent(v: number): void {
    this.u16(this.layout.availOff, v);
    this.u16(this.layout.availOff + 2, EVENT_F_DESC);
  }
  /** Driver event suppression flags (0 ENABLE, 1 DISABLE, 2 DESC, 3 reserved). */
  setAvailFlags(v: number): void {
    this.u16(this.layout.availOff + 2, v & 3);
  }
  /** Device event suppression as the device wrote it: {offWrap, flags}. */
  deviceEvent(): { offWrap: number; flags: number } {
    const v = this.views[0] as DataView;
    return { offWrap: v.getUint16(this.layout.usedOff, true), flags: v.getUint16(this.layout.usedOff + 2, true) };
  }

  /** Descriptor at ring position `pos` as it is now. */
  readDesc(pos: number): { addr: bigint; len: number; id: number; flags: number } {
    const v = this.views[0] as DataView;
    const at = this.layout.descOff + 16 * pos;
    // Flags first, as a driver must (§2.8.6): the device writes id and len before the flags that
    // hand the descriptor over, and a running C++ worker may be writing them right now; read
    // the other way round, an old len could pair with new flags.
    const flags = v.getUint16(at + 14, true);
    return {
      addr: v.getBigUint64(at, true),
      len: v.getUint32(at + 8, true),
      id: v.getUint16(at + 12, true),
      flags,
    };
  }

  /**
   * Takes every used descriptor the device published, as the spec's example driver does
   * (§2.8.21): used when AVAIL and USED both equal the driver's used wrap counter; skip the
   * buffer's descriptor count after each.
   */
  takeUsed(): { id: number; len: number; flags: number }[] {
    const out: { id: number; len: number; flags: number }[] = [];
    while (this.inFlight > 0) {
      const d = this.readDesc(this.nextUsed);
      const avail = (d.flags & DESC_F_AVAIL) !== 0;
      const used = (d.flags & DESC_F_USED) !== 0;
      if (avail !== this.usedWrap || used !== this.usedWrap) break;
      out.push({ id: d.id, len: d.len, flags: d.flags });
      // Skip this buffer's descriptors; with IN_ORDER, those of every buffer before it too.
      let skip = 0;
      if (this.inOrder) {
        for (;;) {
          const x = this.order.shift();
          if (x === undefined) break;
          skip += this.slotsOf.get(x) ?? 1;
          this.inFlight--;
          if (x === d.id) break;
        }
      } else {
        this.order.splice(this.order.indexOf(d.id), 1);
        skip = this.slotsOf.get(d.id) ?? 1;
        this.inFlight--;
      }
      this.nextUsed += skip;
      if (this.nextUsed >= this.layout.num) {
        this.nextUsed -= this.layout.num;
        this.usedWrap = !this.usedWrap;
      }
    }
    return out;
  }
}
