/**
 * `/rings`: a snapshot of every started vring read straight from guest memory, for the live
 * ring page (`/rings.html`). Split rings: the descriptor table, the avail and used rings;
 * packed rings: the descriptor ring with each descriptor's AVAIL/USED bits, both wrap counters
 * and the two event suppression areas. For both, where each descriptor is in its life: offered by the driver and not yet read (`avail`), popped by the
 * device and not yet returned (`inflight`), or in the driver's hands (`free`).
 *
 * Read on request, on the JS thread, while the C++ workers keep running: a teaching view, not
 * an atomic one (an index may move while the snapshot is taken). Memory is never unmapped
 * meanwhile: SET_MEM_TABLE is handled on this same thread.
 */
import type { BackendView } from '../backend.js';
import type { SessionView } from '../vhost-user/session.js';
import { hex } from '../features.js';
import { descFlags } from '../virtio/ring-events.js';
import { packedInFlight } from '../virtio/ring-types.js';
import type { GuestMemoryRef } from '../virtio/guest-memory.js';

export type DescState = 'free' | 'avail' | 'inflight';

export interface RingSnapshot {
  /** Which layout (VIRTIO_F_RING_PACKED): the split fields below, or `packed`. */
  layout: 'split' | 'packed';
  index: number;
  queue: string;
  size: number;
  started: boolean;
  enabled: boolean;
  broken: boolean;
  availFlags: number;
  /** The driver's avail->idx. */
  availIdx: number;
  /** The device's next avail entry to read. */
  lastAvailIdx: number;
  /** used->idx in guest memory (the device's published position). */
  usedIdx: number;
  usedFlags: number;
  /** EVENT_IDX fields (meaningful only when negotiated). */
  usedEvent: number;
  availEvent: number;
  inFlight: number;
  /** `id`: a packed descriptor's buffer id (packed rings have no `next`). */
  desc: { addr: string; len: number; flags: string[]; next: number; id?: number; state: DescState }[];
  /** Heads in avail ring slot order. */
  availRing: number[];
  usedRing: { id: number; len: number }[];
  /** Chains offered and not yet read, then chains popped and not yet used: head and length. */
  chains: { head: number; state: DescState; descs: number[]; bytes: number }[];
  /** Packed rings: positions, wrap counters and event suppression. */
  packed?: PackedSnapshot;
}
/** A packed ring as the ring page draws it (virtio 1.2 §2.8). */
export interface PackedSnapshot {
  /** The device's next descriptor to read and its driver wrap counter expectation. */
  availPos: number;
  availWrap: number;
  /** The device's next used position and its wrap counter. */
  usedPos: number;
  usedWrap: number;
  /** Driver event suppression (read by the device): when to interrupt the driver. */
  driverEvent: { offWrap: number; flags: string };
  /** Device event suppression (written by the device): when the driver should kick. */
  deviceEvent: { offWrap: number; flags: string };
}

const EVENT_FLAGS = ['ENABLE', 'DISABLE', 'DESC', 'reserved'];

/**
 * A packed ring read from guest memory. Descriptor states: from the device's next used
 * position to its next avail position, popped and not used (`inflight`); from its next avail
 * position on, while each is marked available for the wrap counter of its lap (§2.8.1), offered
 * and not read (`avail`); the rest are the driver's (`free`).
 */
function packedSnapshot(
  v: SessionView['vrings'][number],
  mem: GuestMemoryRef,
): Omit<RingSnapshot, 'index' | 'queue' | 'size' | 'started' | 'enabled' | 'broken'> | undefined {
  const n = v.num;
  const addr = v.addr as NonNullable<typeof v.addr>;
  const d = mem.vaView(addr.descUserAddr, BigInt(16 * n));
  const drv = mem.vaView(addr.availUserAddr, 4n);
  const dev = mem.vaView(addr.usedUserAddr, 4n);
  if (!d || !drv || !dev) return undefined;
  const dv = new DataView(d.bytes.buffer, d.bytes.byteOffset + d.offset, 16 * n);
  const ev = (a: { bytes: Uint8Array; offset: number }) => {
    const x = new DataView(a.bytes.buffer, a.bytes.byteOffset + a.offset, 4);
    return { offWrap: x.getUint16(0, true), flags: EVENT_FLAGS[x.getUint16(2, true) & 3] as string };
  };
  const availPos = v.position.lastAvailIdx & 0x7fff;
  const availWrap = (v.position.lastAvailIdx >> 15) & 1;
  const usedPos = v.position.usedIdx & 0x7fff;
  const usedWrap = (v.position.usedIdx >> 15) & 1;
  const small = n <= MAX_SIZE;
  const flagsAt = (i: number) => dv.getUint16(16 * i + 14, true);
  const inFlight = v.started ? packedInFlight(v.position.lastAvailIdx, v.position.usedIdx, n) : 0;
  const desc: RingSnapshot['desc'] = [];
  if (small) {
    for (let i = 0; i < n; i++) {
      desc.push({
        addr: hex(dv.getBigUint64(16 * i, true)),
        len: dv.getUint32(16 * i + 8, true),
        flags: descFlags(flagsAt(i)),
        next: 0,
        id: dv.getUint16(16 * i + 12, true),
        state: 'free',
      });
    }
  }
  const chains: RingSnapshot['chains'] = [];
  // §2.8.1: available when AVAIL equals the lap's wrap counter and USED does not.
  const isAvail = (f: number, wrap: number) => ((f >> 7) & 1) === wrap && ((f >> 15) & 1) !== wrap;
  if (small && v.started) {
    for (let k = 0; k < inFlight; k++) {
      const e = desc[(usedPos + k) % n];
      if (e) e.state = 'inflight';
    }
    // Offered lists, in ring order: each ends at a descriptor without NEXT.
    let pos = availPos;
    let wrap = availWrap;
    let list: number[] = [];
    let bytes = 0;
    for (let k = 0; k < n && isAvail(flagsAt(pos), wrap); k++) {
      const e = desc[pos] as RingSnapshot['desc'][number];
      e.state = 'avail';
      list.push(pos);
      bytes += e.len;
      if (!(flagsAt(pos) & DESC_F_NEXT)) {
        chains.push({ head: e.id ?? 0, state: 'avail', descs: list, bytes });
        list = [];
        bytes = 0;
      }
      if (++pos === n) {
        pos = 0;
        wrap ^= 1;
      }
    }
  }
  const availCount = desc.filter((x) => x.state === 'avail').length;
  return {
    layout: 'packed',
    availFlags: 0,
    availIdx: (availPos + availCount) % n,
    lastAvailIdx: v.position.lastAvailIdx,
    usedIdx: v.position.usedIdx,
    usedFlags: 0,
    usedEvent: 0,
    availEvent: 0,
    inFlight,
    desc,
    availRing: [],
    usedRing: [],
    chains,
    packed: { availPos, availWrap, usedPos, usedWrap, driverEvent: ev(drv), deviceEvent: ev(dev) },
  };
}

const DESC_F_NEXT = 1;
const MAX_SIZE = 1024; // larger rings are summarised (no per-descriptor arrays)

export function ringsOf(backend: BackendView): { connected: boolean; vrings: RingSnapshot[] } {
  const s = backend.view();
  if (!s) return { connected: false, vrings: [] };
  let mem: GuestMemoryRef;
  try {
    mem = s.memoryView();
  } catch {
    return { connected: true, vrings: [] };
  }
  const out: RingSnapshot[] = [];
  for (const v of s.vrings) {
    if (!v.addr || !v.num) continue;
    const n = v.num;
    const head = {
      index: v.index,
      queue: v.queue,
      size: n,
      started: v.started,
      enabled: v.enabled,
      broken: v.broken,
    };
    if (s.packed) {
      const p = packedSnapshot(v, mem);
      if (p) out.push({ ...head, ...p });
      continue;
    }
    const d = mem.vaView(v.addr.descUserAddr, BigInt(16 * n));
    const a = mem.vaView(v.addr.availUserAddr, BigInt(6 + 2 * n));
    const u = mem.vaView(v.addr.usedUserAddr, BigInt(6 + 8 * n));
    if (!d || !a || !u) continue;
    const dv = new DataView(d.bytes.buffer, d.bytes.byteOffset + d.offset, 16 * n);
    const av = new DataView(a.bytes.buffer, a.bytes.byteOffset + a.offset, 6 + 2 * n);
    const uv = new DataView(u.bytes.buffer, u.bytes.byteOffset + u.offset, 6 + 8 * n);
    const usedIdx = uv.getUint16(2, true);
    const lastAvailIdx = v.position.lastAvailIdx;
    const availIdx = av.getUint16(2, true);
    const inFlight = v.started ? (lastAvailIdx - usedIdx) & 0xffff : 0;
    const small = n <= MAX_SIZE;
    const desc: RingSnapshot['desc'] = [];
    if (small) {
      for (let i = 0; i < n; i++) {
        const flags = dv.getUint16(16 * i + 12, true);
        desc.push({
          addr: hex(dv.getBigUint64(16 * i, true)),
          len: dv.getUint32(16 * i + 8, true),
          flags: descFlags(flags),
          next: dv.getUint16(16 * i + 14, true),
          state: 'free',
        });
      }
    }
    // Chains by avail slot: [lastAvailIdx - inFlight, lastAvailIdx) popped, then up to availIdx.
    const chains: RingSnapshot['chains'] = [];
    const pending = (availIdx - lastAvailIdx) & 0xffff;
    const walk = (slot: number, state: DescState) => {
      const head = av.getUint16(4 + 2 * (slot % n), true);
      const descs: number[] = [];
      let bytes = 0;
      for (let i = head, k = 0; i < n && k < n; k++) {
        descs.push(i);
        const flags = dv.getUint16(16 * i + 12, true);
        bytes += dv.getUint32(16 * i + 8, true);
        const e = desc[i];
        if (e) e.state = state;
        if (!(flags & DESC_F_NEXT)) break;
        i = dv.getUint16(16 * i + 14, true);
      }
      chains.push({ head, state, descs, bytes });
    };
    if (small && inFlight <= n && pending <= n) {
      for (let k = inFlight; k > 0; k--) walk((lastAvailIdx - k) & 0xffff, 'inflight');
      for (let k = 0; k < pending; k++) walk((lastAvailIdx + k) & 0xffff, 'avail');
    }
    out.push({
      ...head,
      layout: 'split',
      availFlags: av.getUint16(0, true),
      availIdx,
      lastAvailIdx,
      usedIdx,
      usedFlags: uv.getUint16(0, true),
      usedEvent: av.getUint16(4 + 2 * n, true),
      availEvent: uv.getUint16(4 + 8 * n, true),
      inFlight,
      desc,
      availRing: small ? Array.from({ length: n }, (_, i) => av.getUint16(4 + 2 * i, true)) : [],
      usedRing: small
        ? Array.from({ length: n }, (_, i) => ({
            id: uv.getUint32(4 + 8 * i, true),
            len: uv.getUint32(8 + 8 * i, true),
          }))
        : [],
      chains,
    });
  }
  return { connected: true, vrings: out };
}
