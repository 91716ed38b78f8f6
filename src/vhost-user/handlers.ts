/**
 * The handler table: one row per request this backend serves, holding all of that request's
 * policy: the payload kind it carries, how many fds come with it, which vring it addresses,
 * the protocol feature it needs, whether the data plane must be kept off guest memory while
 * it runs (quiesce), what it replies, and which session method handles it. `dispatch` applies
 * the table: every count, range and feature check happens here, once, so the session methods
 * see only well-formed input. To find everything about a request, read its row.
 */
import type { Logger } from 'pino';
import { ErrorCode, ProtocolError, SessionError } from '../errors.js';
import { ProtocolFeature } from '../features.js';
import {
  encodeMessage,
  encodeU64,
  encodeVringState,
  Flags,
  type Payload,
  type RawMessage,
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
type Kind = Payload['kind'];
type PayloadOf<K extends Kind> = Extract<Payload, { kind: K }>;

interface Row<K extends Kind> {
  /** The payload kind the codec decodes for this request. */
  payload: K;
  /** [min, max] fds this request carries, given its payload. */
  fds(p: PayloadOf<K>): readonly [number, number];
  /** The vring this request addresses, checked against the device's vring count. */
  vring?(p: PayloadOf<K>): number;
  /** The protocol feature the request needs (vhost-user.rst); without it: lint, not refusal. */
  needs?: bigint;
  /** Keep the data plane off guest memory while the handler runs (the memory table changes). */
  quiesce?: true;
  reply: ReplyKind;
  /** The fds are not kept: dispatch closes them once the handler ran. */
  closeFds?: true;
  /**
   * The handler. It owns `fds` once called (it stores or closes them, also when it throws).
   * Returns the reply value for rows with a reply of their own.
   */
  handle(s: Session, p: PayloadOf<K>, fds: number[]): bigint | VringState | void;
}
type AnyRow = { [K in Kind]: Row<K> }[Kind];

const row = <K extends Kind>(payload: K, r: Omit<Row<K>, 'payload'>): Row<K> => ({ payload, ...r });

const NONE = [0, 0] as const;
const ONE = [1, 1] as const;

/**
 * SET_VRING_KICK/CALL/ERR payload: "Bits (0-7) of the payload contain the vring index. Bit 8
 * is the invalid FD flag" (vhost-user.rst); other bits are reserved and must be zero.
 */
function vringFile(p: PayloadOf<'u64'>): { index: number; noFd: boolean } {
  const v = p.u64;
  if (v & ~(VRING_IDX_MASK | VRING_NOFD_MASK)) {
    throw new ProtocolError(ErrorCode.BadField, `vring file payload has reserved bits set: 0x${v.toString(16)}`);
  }
  return { index: Number(v & VRING_IDX_MASK), noFd: (v & VRING_NOFD_MASK) !== 0n };
}
const vringFileRow = (apply: (s: Session, index: number, fd: number | undefined) => void) =>
  row('u64', {
    fds: (p) => (vringFile(p).noFd ? NONE : ONE),
    vring: (p) => vringFile(p).index,
    reply: 'ack',
    handle: (s, p, fds) => apply(s, vringFile(p).index, fds[0]),
  });

const { MQ, LOG_SHMFD, RARP, NET_MTU, CONFIGURE_MEM_SLOTS, STATUS, RESET_DEVICE } = ProtocolFeature;

export const handlerTable: Partial<Record<RequestName, AnyRow>> = {
  GET_FEATURES: row('none', { fds: () => NONE, reply: 'u64', handle: (s) => s.getFeatures() }),
  SET_FEATURES: row('u64', { fds: () => NONE, reply: 'ack', handle: (s, p) => s.setFeatures(p.u64) }),
  SET_OWNER: row('none', { fds: () => NONE, reply: 'ack', handle: (s) => s.setOwner() }),
  RESET_OWNER: row('none', { fds: () => NONE, reply: 'ack', handle: (s) => s.resetDevice() }),
  SET_MEM_TABLE: row('memTable', {
    fds: (p) => [p.table.nregions, p.table.nregions],
    quiesce: true,
    reply: 'ack',
    handle: (s, p, fds) => s.setMemTable(p.table, fds),
  }),
  // vhost-user.rst "Migration": with LOG_SHMFD the log comes as an fd, and the front-end waits
  // for a reply (QEMU reads one whatever its payload; we send a zero u64 as libvhost-user does).
  SET_LOG_BASE: row('log', {
    fds: () => ONE,
    needs: LOG_SHMFD,
    reply: 'u64',
    handle: (s, p, fds) => s.setLogBase(p.log, fds[0] as number),
  }),
  SET_LOG_FD: row('none', { fds: () => ONE, reply: 'ack', handle: (s, _p, fds) => s.setLogFd(fds[0] as number) }),
  SET_VRING_NUM: row('vringState', {
    fds: () => NONE,
    vring: (p) => p.state.index,
    reply: 'ack',
    handle: (s, p) => s.setVringNum(p.state),
  }),
  SET_VRING_ADDR: row('vringAddr', {
    fds: () => NONE,
    vring: (p) => p.addr.index,
    reply: 'ack',
    handle: (s, p) => s.setVringAddr(p.addr),
  }),
  SET_VRING_BASE: row('vringState', {
    fds: () => NONE,
    vring: (p) => p.state.index,
    reply: 'ack',
    handle: (s, p) => s.setVringBase(p.state),
  }),
  GET_VRING_BASE: row('vringState', {
    fds: () => NONE,
    vring: (p) => p.state.index,
    reply: 'vringState',
    handle: (s, p) => s.getVringBase(p.state.index),
  }),
  SET_VRING_KICK: vringFileRow((s, i, fd) => s.setVringKick(i, fd)),
  SET_VRING_CALL: vringFileRow((s, i, fd) => s.setVringCall(i, fd)),
  SET_VRING_ERR: vringFileRow((s, i, fd) => s.setVringErr(i, fd)),
  GET_PROTOCOL_FEATURES: row('none', { fds: () => NONE, reply: 'u64', handle: (s) => s.getProtocolFeatures() }),
  SET_PROTOCOL_FEATURES: row('u64', {
    fds: () => NONE,
    reply: 'ack',
    handle: (s, p) => s.setProtocolFeatures(p.u64),
  }),
  GET_QUEUE_NUM: row('none', { fds: () => NONE, needs: MQ, reply: 'u64', handle: (s) => s.getQueueNum() }),
  SET_VRING_ENABLE: row('vringState', {
    fds: () => NONE,
    vring: (p) => p.state.index,
    reply: 'ack',
    handle: (s, p) => s.setVringEnable(p.state),
  }),
  SEND_RARP: row('u64', { fds: () => NONE, needs: RARP, reply: 'ack', handle: (s, p) => s.sendRarp(p.u64) }),
  NET_SET_MTU: row('u64', { fds: () => NONE, needs: NET_MTU, reply: 'ack', handle: (s, p) => s.netSetMtu(p.u64) }),
  RESET_DEVICE: row('none', { fds: () => NONE, needs: RESET_DEVICE, reply: 'ack', handle: (s) => s.resetDevice() }),
  GET_MAX_MEM_SLOTS: row('none', {
    fds: () => NONE,
    needs: CONFIGURE_MEM_SLOTS,
    reply: 'u64',
    handle: (s) => s.getMaxMemSlots(),
  }),
  ADD_MEM_REG: row('singleRegion', {
    fds: () => ONE,
    needs: CONFIGURE_MEM_SLOTS,
    quiesce: true,
    reply: 'ack',
    handle: (s, p, fds) => s.addMemReg(p.region, fds[0] as number),
  }),
  // QEMU sends the region's fd with REM_MEM_REG, other front-ends none: both accepted.
  REM_MEM_REG: row('singleRegion', {
    fds: () => [0, 1],
    needs: CONFIGURE_MEM_SLOTS,
    quiesce: true,
    reply: 'ack',
    closeFds: true,
    handle: (s, p) => s.remMemReg(p.region),
  }),
  SET_STATUS: row('u64', { fds: () => NONE, needs: STATUS, reply: 'ack', handle: (s, p) => s.setStatus(p.u64) }),
  GET_STATUS: row('none', { fds: () => NONE, needs: STATUS, reply: 'u64', handle: (s) => s.getStatus() }),
};

export interface Reply {
  bytes: Buffer;
  /** A REPLY_ACK (u64 status) rather than the request's own reply. */
  ack: boolean;
  /** True when this is a REPLY_ACK reporting failure. */
  nack: boolean;
}

/** Watches dispatch (the protocol trace): told when a request starts and how it ended. */
export interface DispatchObserver {
  start(): void;
  /** `error` when the request closes the connection; `reply` when one is sent. */
  done(error: Error | undefined, reply: Reply | undefined): void;
}

export function rowFor(request: number): AnyRow | undefined {
  const name = requestName(request) as RequestName;
  return Object.prototype.hasOwnProperty.call(handlerTable, name) ? handlerTable[name] : undefined;
}

/**
 * Applies the table to one message: checks fds and vring index, runs the handler (quiesced
 * when the row says so), builds the reply. Throws ProtocolError/FeatureError (close the
 * connection); returns a NACK for a SessionError when REPLY_ACK was asked for.
 */
export function dispatch(
  session: Session,
  msg: RawMessage,
  native: { close(fd: number): void },
  log: Logger,
  observer?: DispatchObserver,
): Reply | undefined {
  observer?.start();
  let reply: Reply | undefined;
  try {
    reply = apply(session, msg, native, log);
  } catch (err) {
    observer?.done(err as Error, undefined);
    throw err;
  }
  observer?.done(undefined, reply);
  return reply;
}

function apply(session: Session, msg: RawMessage, native: { close(fd: number): void }, log: Logger): Reply | undefined {
  const { header, fds } = msg;
  const name = requestName(header.request);
  let row: Row<Kind>;
  let payload: Payload;
  try {
    const r = rowFor(header.request);
    if (!r) {
      throw new ProtocolError(ErrorCode.UnsupportedRequest, `${name} is not supported by this backend`, {
        request: header.request,
      });
    }
    payload = decodePayload(header.request, msg.payload);
    // The table and the codec agree on every row's payload kind (a unit test checks it); this
    // is the one place a payload is narrowed to its row's kind.
    if (payload.kind !== r.payload)
      throw new Error(`internal: ${name} decoded as ${payload.kind}, row says ${r.payload}`);
    row = r as Row<Kind>;
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
          { request: name, vring: index },
        );
      }
    }
  } catch (err) {
    for (const fd of fds) native.close(fd);
    throw err;
  }

  for (const f of lintRequest(header, session, row.needs)) session.reportLint(f);
  let value: bigint | VringState | void = undefined;
  let failure: SessionError | undefined;
  try {
    value = row.quiesce ? session.quiesced(() => row.handle(session, payload, fds)) : row.handle(session, payload, fds);
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
