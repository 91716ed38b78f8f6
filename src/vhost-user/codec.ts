/**
 * vhost-user codec: syntax only. Knows every request of the spec, the payload kind and exact
 * size each one has, and how to decode and encode payloads. Meaning lives in the session.
 */
import { ErrorCode, ProtocolError } from '../errors.js';
import {
  header as headerLayout,
  type HeaderFields,
  logDescription,
  type LogDescription,
  MEM_REGION_SIZE,
  MEM_TABLE_HEAD_SIZE,
  memRegion,
  type MemRegion,
  memTableHead,
  singleRegion,
  type SingleRegion,
  u64Payload,
  vringAddr,
  type VringAddr,
  vringState,
  type VringState,
} from './layouts.js';

export type { LogDescription, MemRegion, SingleRegion, VringAddr, VringState };

/** Front-end requests, numbered as in vhost-user.rst "Front-end message types". */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;
export type RequestName = keyof typeof Request;

/**
 * Requests answered by a payload of their own (vhost-user.rst lists a reply for each), not by
 * a REPLY_ACK: a back-end cannot NACK them.
 */
export const OWN_REPLY: ReadonlySet<RequestName> = new Set<RequestName>([
  'GET_FEATURES',
  'GET_PROTOCOL_FEATURES',
  'GET_VRING_BASE',
  'GET_QUEUE_NUM',
  'GET_CONFIG',
  'GET_INFLIGHT_FD',
  'GET_MAX_MEM_SLOTS',
  'GET_STATUS',
  'GET_SHARED_OBJECT',
  'SET_LOG_BASE',
  'POSTCOPY_ADVISE',
  'CHECK_DEVICE_STATE',
  'SET_DEVICE_STATE_FD',
  'CREATE_CRYPTO_SESSION',
]);

const names = new Map<number, RequestName>(Object.entries(Request).map(([k, v]) => [v, k as RequestName]));

/** The spec's name without the VHOST_USER_ prefix, or `UNKNOWN(n)`. */
export function requestName(request: number): string {
  return names.get(request) ?? `UNKNOWN(${request})`;
}

export const HEADER_SIZE = 12;
/** Header flags (vhost-user.rst "Header"): version in bits 0-1, reply bit 2, need_reply bit 3. */
export const Flags = {
  VERSION_MASK: 0x3,
  VERSION: 0x1,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;
/** The largest payload any request may carry (GET/SET_CONFIG: 12 + 256 bytes). */
export const MAX_PAYLOAD = 12 + 256;
/** SET_MEM_TABLE carries at most this many regions (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MEM_TABLE_MAX_REGIONS = 8;
/** The maximum number of fds one message may carry. */
export const MAX_FDS = 8;
/** SET_VRING_KICK/CALL/ERR payload: bits 0-7 vring index, bit 8 "no fd" (polling/unset). */
export const VRING_IDX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;

/** How a request's payload is laid out. */
export type PayloadKind =
  'none' | 'u64' | 'vringState' | 'vringAddr' | 'memTable' | 'singleRegion' | 'log' | 'iotlb' | 'config' | 'other';

const payloadKinds: Record<RequestName, PayloadKind> = {
  GET_FEATURES: 'none',
  SET_FEATURES: 'u64',
  SET_OWNER: 'none',
  RESET_OWNER: 'none',
  SET_MEM_TABLE: 'memTable',
  SET_LOG_BASE: 'log',
  SET_LOG_FD: 'none',
  SET_VRING_NUM: 'vringState',
  SET_VRING_ADDR: 'vringAddr',
  SET_VRING_BASE: 'vringState',
  GET_VRING_BASE: 'vringState',
  SET_VRING_KICK: 'u64',
  SET_VRING_CALL: 'u64',
  SET_VRING_ERR: 'u64',
  GET_PROTOCOL_FEATURES: 'none',
  SET_PROTOCOL_FEATURES: 'u64',
  GET_QUEUE_NUM: 'none',
  SET_VRING_ENABLE: 'vringState',
  SEND_RARP: 'u64',
  NET_SET_MTU: 'u64',
  SET_BACKEND_REQ_FD: 'none',
  IOTLB_MSG: 'iotlb',
  SET_VRING_ENDIAN: 'vringState',
  GET_CONFIG: 'config',
  SET_CONFIG: 'config',
  CREATE_CRYPTO_SESSION: 'other',
  CLOSE_CRYPTO_SESSION: 'u64',
  POSTCOPY_ADVISE: 'none',
  POSTCOPY_LISTEN: 'none',
  POSTCOPY_END: 'none',
  GET_INFLIGHT_FD: 'other',
  SET_INFLIGHT_FD: 'other',
  GPU_SET_SOCKET: 'none',
  RESET_DEVICE: 'none',
  VRING_KICK: 'vringState',
  GET_MAX_MEM_SLOTS: 'none',
  ADD_MEM_REG: 'singleRegion',
  REM_MEM_REG: 'singleRegion',
  SET_STATUS: 'u64',
  GET_STATUS: 'none',
  GET_SHARED_OBJECT: 'other',
  SET_DEVICE_STATE_FD: 'other',
  CHECK_DEVICE_STATE: 'none',
};

export function payloadKind(request: number): PayloadKind | undefined {
  const name = names.get(request);
  return name ? payloadKinds[name] : undefined;
}

/** Sizes a payload of this kind may have; `undefined` means "any up to MAX_PAYLOAD". */
function allowedSizes(kind: PayloadKind): readonly number[] | undefined {
  switch (kind) {
    case 'none':
      return [0];
    case 'u64':
    case 'vringState':
      return [8];
    case 'vringAddr':
      return [40];
    case 'log':
      return [16];
    case 'iotlb':
      return [32];
    case 'singleRegion':
      return [8 + MEM_REGION_SIZE];
    case 'memTable':
      // nregions regions follow the head; QEMU and DPDK send exactly nregions of them, some
      // front-ends the full 8-slot array: both are accepted, nregions is checked on decode.
      return Array.from({ length: MEM_TABLE_MAX_REGIONS + 1 }, (_, n) => MEM_TABLE_HEAD_SIZE + n * MEM_REGION_SIZE);
    default:
      return undefined;
  }
}

export interface Header extends HeaderFields {
  needReply: boolean;
}

/** One message as the transport reads it: its header, payload and fds, not yet decoded further. */
export interface RawMessage {
  header: Header;
  payload: Buffer;
  /** fds received with the message; whoever handles it owns them. */
  fds: number[];
}

export function decodeHeader(buf: Buffer): Header {
  const h = headerLayout.decode(buf, 0);
  return { ...h, needReply: (h.flags & Flags.NEED_REPLY) !== 0 };
}

/**
 * Checks a request header before its payload is read: version, flags, known request, size.
 * Throws ProtocolError; the connection is then closed without reading further.
 */
export function checkHeader(h: Header): void {
  const ctx = { request: requestName(h.request), flags: h.flags, size: h.size };
  if ((h.flags & Flags.VERSION_MASK) !== Flags.VERSION) {
    throw new ProtocolError(
      ErrorCode.BadVersion,
      `unsupported protocol version ${h.flags & Flags.VERSION_MASK} (vhost-user.rst "Header": version is 0x1)`,
      ctx,
    );
  }
  if (h.flags & Flags.REPLY) {
    throw new ProtocolError(ErrorCode.BadFlags, 'request carries the reply flag', ctx);
  }
  if (h.flags & ~(Flags.VERSION_MASK | Flags.REPLY | Flags.NEED_REPLY)) {
    throw new ProtocolError(ErrorCode.BadFlags, `reserved header flag bits set: 0x${h.flags.toString(16)}`, ctx);
  }
  const kind = payloadKind(h.request);
  if (!kind) throw new ProtocolError(ErrorCode.UnknownRequest, `unknown request ${h.request}`, ctx);
  const sizes = allowedSizes(kind);
  if (sizes ? !sizes.includes(h.size) : h.size > MAX_PAYLOAD) {
    throw new ProtocolError(
      ErrorCode.BadSize,
      `${requestName(h.request)}: payload size ${h.size}, expected ${sizes ? sizes.join(' or ') : `<= ${MAX_PAYLOAD}`}`,
      ctx,
    );
  }
}

export interface MemTable {
  nregions: number;
  regions: MemRegion[];
}

/** Decoded payloads by kind; `raw` for kinds we only frame. */
export type Payload =
  | { kind: 'none' }
  | { kind: 'u64'; u64: bigint }
  | { kind: 'vringState'; state: VringState }
  | { kind: 'vringAddr'; addr: VringAddr }
  | { kind: 'memTable'; table: MemTable }
  | { kind: 'singleRegion'; region: MemRegion }
  | { kind: 'log'; log: LogDescription }
  | { kind: 'raw'; bytes: Buffer };

export function decodePayload(request: number, buf: Buffer): Payload {
  const kind = payloadKind(request);
  switch (kind) {
    case 'none':
      return { kind: 'none' };
    case 'u64':
      return { kind: 'u64', u64: u64Payload.decode(buf).u64 };
    case 'vringState':
      return { kind: 'vringState', state: vringState.decode(buf) };
    case 'vringAddr':
      return { kind: 'vringAddr', addr: vringAddr.decode(buf) };
    case 'singleRegion':
      return { kind: 'singleRegion', region: singleRegion.decode(buf).region };
    case 'log':
      return { kind: 'log', log: logDescription.decode(buf) };
    case 'memTable': {
      const head = memTableHead.decode(buf);
      const room = (buf.length - MEM_TABLE_HEAD_SIZE) / MEM_REGION_SIZE;
      if (head.nregions > room) {
        throw new ProtocolError(
          ErrorCode.BadSize,
          `SET_MEM_TABLE: nregions ${head.nregions} but payload holds ${room} regions`,
          { nregions: head.nregions, size: buf.length },
        );
      }
      const regions: MemRegion[] = [];
      for (let i = 0; i < head.nregions; i++) {
        regions.push(memRegion.decode(buf, MEM_TABLE_HEAD_SIZE + i * MEM_REGION_SIZE));
      }
      return { kind: 'memTable', table: { nregions: head.nregions, regions } };
    }
    default:
      return { kind: 'raw', bytes: Buffer.from(buf) };
  }
}

/** Encodes a whole message: header, then payload. */
export function encodeMessage(request: number, flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(HEADER_SIZE + payload.length);
  headerLayout.encode({ request, flags, size: payload.length }, out, 0);
  payload.copy(out, HEADER_SIZE);
  return out;
}

export function encodeU64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  u64Payload.encode({ u64: v }, b, 0);
  return b;
}

export function encodeVringState(s: VringState): Buffer {
  const b = Buffer.alloc(8);
  vringState.encode(s, b, 0);
  return b;
}

export function encodeVringAddr(a: VringAddr): Buffer {
  const b = Buffer.alloc(40);
  vringAddr.encode(a, b, 0);
  return b;
}

export function encodeMemTable(regions: MemRegion[]): Buffer {
  const b = Buffer.alloc(MEM_TABLE_HEAD_SIZE + regions.length * MEM_REGION_SIZE);
  memTableHead.encode({ nregions: regions.length, padding: 0 }, b, 0);
  regions.forEach((r, i) => memRegion.encode(r, b, MEM_TABLE_HEAD_SIZE + i * MEM_REGION_SIZE));
  return b;
}

export function encodeLogDescription(log: LogDescription): Buffer {
  const b = Buffer.alloc(16);
  logDescription.encode(log, b, 0);
  return b;
}

export function encodeSingleRegion(region: MemRegion): Buffer {
  const b = Buffer.alloc(8 + MEM_REGION_SIZE);
  singleRegion.encode({ padding: 0n, region }, b, 0);
  return b;
}
