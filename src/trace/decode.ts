/**
 * Renders vhost-user payloads for people: every field by name, addresses and masks as 0x hex,
 * feature masks with their bit names, status bytes with their flag names. Used by the message
 * trace and `explain`; never on the data path.
 */
import { featureNames, hex, ProtocolFeature, VirtioFeature } from '../features.js';
import {
  decodePayload,
  type Payload,
  Request,
  requestName,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
} from '../vhost-user/codec.js';

/** virtio 1.2 §2.1 device status bits. */
const STATUS_BITS: [number, string][] = [
  [1, 'ACKNOWLEDGE'],
  [2, 'DRIVER'],
  [4, 'DRIVER_OK'],
  [8, 'FEATURES_OK'],
  [64, 'DEVICE_NEEDS_RESET'],
  [128, 'FAILED'],
];

export function statusNames(s: number): string[] {
  return STATUS_BITS.filter(([b]) => s & b).map(([, n]) => n);
}

const region = (r: { guestAddr: bigint; size: bigint; userAddr: bigint; mmapOffset: bigint }) => ({
  guestAddr: hex(r.guestAddr),
  size: hex(r.size),
  userAddr: hex(r.userAddr),
  mmapOffset: hex(r.mmapOffset),
});

/** A request's payload, decoded field by field (or the raw bytes when it does not decode). */
export function describeRequest(request: number, payload: Buffer): Record<string, unknown> {
  let p: Payload;
  try {
    p = decodePayload(request, payload);
  } catch (err) {
    return { undecodable: (err as Error).message, bytes: payload.toString('hex') };
  }
  return describe(request, p, false);
}

/** A reply's payload (its own reply, or the u64 of REPLY_ACK). */
export function describeReply(request: number, payload: Buffer, isAck: boolean): Record<string, unknown> {
  if (isAck) {
    const v = payload.length === 8 ? payload.readBigUInt64LE(0) : -1n;
    return { ack: v.toString(), ok: v === 0n };
  }
  const kind = request === Request.GET_VRING_BASE ? 'vringState' : 'u64';
  if (kind === 'vringState')
    return describe(request, { kind, state: { index: payload.readUInt32LE(0), num: payload.readUInt32LE(4) } }, true);
  return describe(request, { kind: 'u64', u64: payload.readBigUInt64LE(0) }, true);
}

function describe(request: number, p: Payload, reply: boolean): Record<string, unknown> {
  const name = requestName(request);
  switch (p.kind) {
    case 'none':
      return {};
    case 'u64': {
      const v = p.u64;
      if (name === 'GET_FEATURES' || name === 'SET_FEATURES')
        return { features: hex(v), names: featureNames(v, VirtioFeature) };
      if (name.endsWith('PROTOCOL_FEATURES'))
        return { protocolFeatures: hex(v), names: featureNames(v, ProtocolFeature) };
      if (name === 'SET_VRING_KICK' || name === 'SET_VRING_CALL' || name === 'SET_VRING_ERR') {
        return { index: Number(v & VRING_IDX_MASK), noFd: (v & VRING_NOFD_MASK) !== 0n, raw: hex(v) };
      }
      if (name === 'SET_STATUS' || name === 'GET_STATUS')
        return { status: hex(v), bits: statusNames(Number(v & 0xffn)) };
      if (name === 'NET_SET_MTU') return { mtu: Number(v) };
      if (name === 'GET_QUEUE_NUM') return { queuePairs: Number(v) };
      if (name === 'GET_MAX_MEM_SLOTS') return { slots: Number(v) };
      if (name === 'SEND_RARP') {
        const b = Buffer.alloc(8);
        b.writeBigUInt64LE(v);
        return { mac: [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':') };
      }
      return { value: hex(v) };
    }
    case 'vringState':
      if (name === 'SET_VRING_ENABLE') return { index: p.state.index, enable: p.state.num };
      if (name === 'SET_VRING_NUM') return { index: p.state.index, size: p.state.num };
      if (name === 'SET_VRING_BASE' || name === 'GET_VRING_BASE') {
        // A packed ring's base is two positions (vhost-user.rst "Vring state description"):
        // bits 0-14 avail, 15 its wrap counter, 16-30 used, 31 its wrap counter. A split one's
        // is a u16, so bit 15 or higher bits set can only be a packed ring's.
        const n = p.state.num;
        const positions = `avail ${n & 0x7fff} wrap ${(n >>> 15) & 1}${n > 0xffff ? `, used ${(n >>> 16) & 0x7fff} wrap ${n >>> 31}` : ''}`;
        const packed = n > 0xffff ? { packed: positions } : n > 0x7fff ? { ifPacked: positions } : {};
        const base = { nextAvailIdx: n, ...(n > 0xffff ? { hex: hex(n) } : {}), ...packed };
        return reply || name === 'SET_VRING_BASE' ? { index: p.state.index, ...base } : { index: p.state.index };
      }
      return { index: p.state.index, num: p.state.num };
    case 'vringAddr':
      return {
        index: p.addr.index,
        flags: hex(p.addr.flags),
        log: (p.addr.flags & 1) !== 0,
        descUserAddr: hex(p.addr.descUserAddr),
        availUserAddr: hex(p.addr.availUserAddr),
        usedUserAddr: hex(p.addr.usedUserAddr),
        logGuestAddr: hex(p.addr.logGuestAddr),
      };
    case 'memTable':
      return { nregions: p.table.nregions, regions: p.table.regions.map(region) };
    case 'singleRegion':
      return { region: region(p.region) };
    case 'log':
      return { mmapSize: hex(p.log.mmapSize), mmapOffset: hex(p.log.mmapOffset) };
    case 'raw':
      return { bytes: p.bytes.toString('hex') };
  }
}
