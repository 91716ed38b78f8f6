/**
 * The handler table: one row per request this backend serves, saying how many fds it
 * carries, which vring it addresses, what it replies, and which session method handles it.
 * `dispatch` applies the table: every count and range check happens here, once, so the
 * session methods see only well-formed input. To find the handler of a request, read its row.
 */
import type { Logger } from 'pino';
import { ErrorCode, ProtocolError, SessionError } from '../errors.js';
import { ProtocolFeature } from '../features.js';
import type { RawMessage } from '../transport/connection.js';
import {
  encodeMessage,
  encodeU64,
  encodeVringState,
  Flags,
  type Payload,
  decodePayload,
  type RequestName,
  requestName,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
  type VringState,
} from './codec.js';
import { lintRequest } from './lint.js';
import type { Session } from './session.js';

/** What a request answers: only a REPLY_ACK when asked ('ack'), or a reply of its own. */
type ReplyKind = 'ack' | 'u64' | 'vringState';

interface Row {
  /** [min, max] fds this request carries, given its payload. */
  fds(p: Payload): readonly [number, number];
  /** The vring this request addresses, checked against the device's vring count. */
  vring?(p: Payload): number;
  reply: ReplyKind;
  /** The fds are not kept: dispatch closes them once the handler ran. */
  closeFds?: true;
  /**
   * The handler. It owns `fds` once called (it stores or closes them, also when it throws).
   * Returns the reply value for rows with a reply of their own.
   */
  handle(s: Session, p: Payload, fds: number[]): bigint | VringState | void;
}

const NONE = [0, 0] as const;
const ONE = [1, 1] as const;

function u64Of(p: Payload): bigint {
  if (p.kind !== 'u64') throw new Error(`internal: expected a u64 payload, got ${p.kind}`);
  return p.u64;
}
function stateOf(p: Payload): VringState {
  if (p.kind !== 'vringState') throw new Error(`internal: expected a vring state, got ${p.kind}`);
  return p.state;
}

/**
 * SET_VRING_KICK/CALL/ERR payload: "Bits (0-7) of the payload contain the vring index. Bit 8
 * is the invalid FD flag" (vhost-user.rst); other bits are reserved and must be zero.
 */
function vringFile(p: Payload): { index: number; noFd: boolean } {
  const v = u64Of(p);
  if (v & ~(VRING_IDX_MASK | VRING_NOFD_MASK)) {
    throw new ProtocolError(ErrorCode.BadField, `vring file payload has reserved bits set: 0x${v.toString(16)}`);
  }
  return { index: Number(v & VRING_IDX_MASK), noFd: (v & VRING_NOFD_MASK) !== 0n };
}
const vringFileRow = (apply: (s: Session, index: number, fd: number | undefined) => void): Row => ({
  fds: (p) => (vringFile(p).noFd ? NONE : ONE),
  vring: (p) => vringFile(p).index,
  reply: 'ack',
  handle: (s, p, fds) => apply(s, vringFile(p).index, fds[0]),
});

export const handlerTable: Partial<Record<RequestName, Row>> = {
  GET_FEATURES: { fds: () => NONE, reply: 'u64', handle: (s) => s.getFeatures() },
  SET_FEATURES: { fds: () => NONE, reply: 'ack', handle: (s, p) => s.setFeatures(u64Of(p)) },
  SET_OWNER: { fds: () => NONE, reply: 'ack', handle: (s) => s.setOwner() },
  RESET_OWNER: { fds: () => NONE, reply: 'ack', handle: (s) => s.resetDevice() },
  SET_MEM_TABLE: {
    fds: (p) => (p.kind === 'memTable' ? [p.table.nregions, p.table.nregions] : NONE),
    reply: 'ack',
    handle: (s, p, fds) => {
      if (p.kind === 'memTable') s.setMemTable(p.table, fds);
    },
  },
  SET_VRING_NUM: {
    fds: () => NONE,
    vring: (p) => stateOf(p).index,
    reply: 'ack',
    handle: (s, p) => s.setVringNum(stateOf(p)),
  },
  SET_VRING_ADDR: {
    fds: () => NONE,
    vring: (p) => (p.kind === 'vringAddr' ? p.addr.index : -1),
    reply: 'ack',
    handle: (s, p) => {
      if (p.kind === 'vringAddr') s.setVringAddr(p.addr);
    },
  },
  SET_VRING_BASE: {
    fds: () => NONE,
    vring: (p) => stateOf(p).index,
    reply: 'ack',
    handle: (s, p) => s.setVringBase(stateOf(p)),
  },
  GET_VRING_BASE: {
    fds: () => NONE,
    vring: (p) => stateOf(p).index,
    reply: 'vringState',
    handle: (s, p) => s.getVringBase(stateOf(p).index),
  },
  SET_VRING_KICK: vringFileRow((s, i, fd) => s.setVringKick(i, fd)),
  SET_VRING_CALL: vringFileRow((s, i, fd) => s.setVringCall(i, fd)),
  SET_VRING_ERR: vringFileRow((s, i, fd) => s.setVringErr(i, fd)),
  GET_PROTOCOL_FEATURES: { fds: () => NONE, reply: 'u64', handle: (s) => s.getProtocolFeatures() },
  SET_PROTOCOL_FEATURES: { fds: () => NONE, reply: 'ack', handle: (s, p) => s.setProtocolFeatures(u64Of(p)) },
  GET_QUEUE_NUM: { fds: () => NONE, reply: 'u64', handle: (s) => s.getQueueNum() },
  SET_VRING_ENABLE: {
    fds: () => NONE,
    vring: (p) => stateOf(p).index,
    reply: 'ack',
    handle: (s, p) => s.setVringEnable(stateOf(p)),
  },
  SEND_RARP: { fds: () => NONE, reply: 'ack', handle: (s, p) => s.sendRarp(u64Of(p)) },
  NET_SET_MTU: { fds: () => NONE, reply: 'ack', handle: (s, p) => s.netSetMtu(u64Of(p)) },
  RESET_DEVICE: { fds: () => NONE, reply: 'ack', handle: (s) => s.resetDevice() },
  GET_MAX_MEM_SLOTS: { fds: () => NONE, reply: 'u64', handle: (s) => s.getMaxMemSlots() },
  ADD_MEM_REG: {
    fds: () => ONE,
    reply: 'ack',
    handle: (s, p, fds) => {
      if (p.kind === 'singleRegion') s.addMemReg(p.region, fds[0] as number);
    },
  },
  // QEMU sends the region's fd with REM_MEM_REG, other front-ends none: both accepted.
  REM_MEM_REG: {
    fds: () => [0, 1],
    reply: 'ack',
    closeFds: true,
    handle: (s, p) => {
      if (p.kind === 'singleRegion') s.remMemReg(p.region);
    },
  },
  SET_STATUS: { fds: () => NONE, reply: 'ack', handle: (s, p) => s.setStatus(u64Of(p)) },
  GET_STATUS: { fds: () => NONE, reply: 'u64', handle: (s) => s.getStatus() },
};

export interface Reply {
  bytes: Buffer;
  /** A REPLY_ACK (u64 status) rather than the request's own reply. */
  ack: boolean;
  /** True when this is a REPLY_ACK reporting failure. */
  nack: boolean;
}

function rowFor(request: number): Row | undefined {
  const name = requestName(request) as RequestName;
  return Object.prototype.hasOwnProperty.call(handlerTable, name) ? handlerTable[name] : undefined;
}

/**
 * Applies the table to one message: checks fds and vring index, runs the handler, builds the
 * reply. Throws ProtocolError/FeatureError (close the connection); returns a NACK for a
 * SessionError when REPLY_ACK was asked for.
 */
export function dispatch(
  session: Session,
  msg: RawMessage,
  native: { close(fd: number): void },
  log: Logger,
): Reply | undefined {
  const { header, fds } = msg;
  const name = requestName(header.request);
  let row: Row | undefined;
  let payload: Payload;
  try {
    row = rowFor(header.request);
    if (!row) {
      throw new ProtocolError(ErrorCode.UnsupportedRequest, `${name} is not supported by this backend`, {
        request: header.request,
      });
    }
    payload = decodePayload(header.request, msg.payload);
    const [min, max] = row.fds(payload);
    if (fds.length < min || fds.length > max) {
      throw new ProtocolError(
        ErrorCode.BadFdCount,
        `${name}: ${fds.length} fds, expected ${min === max ? min : `${min}..${max}`}`,
        { request: name, fds: fds.length },
      );
    }
    if (row.vring) {
      const index = row.vring(payload);
      if (index < 0 || index >= session.vrings.length) {
        throw new ProtocolError(
          ErrorCode.VringIndex,
          `${name}: vring ${index} out of range 0..${session.vrings.length - 1}`,
          {
            request: name,
            vring: index,
          },
        );
      }
    }
  } catch (err) {
    for (const fd of fds) native.close(fd);
    throw err;
  }

  for (const f of lintRequest(header, session)) session.reportLint(f);
  let value: bigint | VringState | void = undefined;
  let failure: SessionError | undefined;
  try {
    value = row.handle(session, payload, fds);
  } catch (err) {
    if (err instanceof SessionError && err.recovery === 'nack' && row.reply === 'ack') failure = err;
    else throw err;
  } finally {
    if (row.closeFds) for (const fd of fds) native.close(fd);
  }

  const replyFlags = Flags.VERSION | Flags.REPLY;
  switch (row.reply) {
    case 'u64':
      return { bytes: encodeMessage(header.request, replyFlags, encodeU64(value as bigint)), ack: false, nack: false };
    case 'vringState':
      return {
        bytes: encodeMessage(header.request, replyFlags, encodeVringState(value as VringState)),
        ack: false,
        nack: false,
      };
    case 'ack':
      // vhost-user.rst "REPLY_ACK": with the feature negotiated and need_reply set, the back-end
      // MUST reply with a u64: zero for success, non-zero for failure.
      if (failure) log.error({ err: failure, code: failure.code, request: name, ...failure.details }, 'request failed');
      if (header.needReply && session.hasProtocolFeature(ProtocolFeature.REPLY_ACK)) {
        return {
          bytes: encodeMessage(header.request, replyFlags, encodeU64(failure ? 1n : 0n)),
          ack: true,
          nack: !!failure,
        };
      }
      return undefined;
  }
}
