/**
 * `/rings`: a snapshot of every started vring read straight from guest memory, for the live
 * ring page (`/rings.html`). The descriptor table, the avail and used rings, and where each
 * descriptor is in its life: offered by the driver and not yet read (`avail`), popped by the
 * device and not yet returned (`inflight`), or in the driver's hands (`free`).
 *
 * Read on request, on the JS thread, while the C++ workers keep running: a teaching view, not
 * an atomic one (an index may move while the snapshot is taken). Memory is never unmapped
 * meanwhile: SET_MEM_TABLE is handled on this same thread.
 */
import type { BackendView } from '../backend.js';
import { hex } from '../features.js';
import { descFlags } from '../virtio/ring-events.js';
import type { GuestMemoryRef } from '../virtio/guest-memory.js';

export type DescState = 'free' | 'avail' | 'inflight';

export interface RingSnapshot {
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
  desc: { addr: string; len: number; flags: string[]; next: number; state: DescState }[];
  /** Heads in avail ring slot order. */
  availRing: number[];
  usedRing: { id: number; len: number }[];
  /** Chains offered and not yet read, then chains popped and not yet used: head and length. */
  chains: { head: number; state: DescState; descs: number[]; bytes: number }[];
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
      index: v.index,
      queue: v.queue,
      size: n,
      started: v.started,
      enabled: v.enabled,
      broken: v.broken,
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
