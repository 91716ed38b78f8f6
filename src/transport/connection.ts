/**
 * One vhost-user connection: framing over a non-blocking unix socket. Reads the 12-byte
 * header (fds arrive with it), checks it, then reads exactly `size` payload bytes; never
 * more, so two messages are never merged. Any syntax fault closes the connection and every
 * fd it holds.
 */
import type { Logger } from 'pino';
import { ErrorCode, ProtocolError, type VunError } from '../errors.js';
import { call, type NativeBinding, type NativePoller } from '../native.js';
import {
  checkHeader,
  decodeHeader,
  HEADER_SIZE,
  type Header,
  MAX_FDS,
  type RawMessage,
  requestName,
} from '../vhost-user/codec.js';

export type { RawMessage } from '../vhost-user/codec.js';

export interface ConnectionEvents {
  /** A whole message. Throwing a VunError with recovery 'close-connection' closes. */
  onMessage(msg: RawMessage): void;
  /** The connection is gone (peer closed, or closed because of `reason`). Called once. */
  onClose(reason?: Error): void;
}

const READABLE = 1;

export class ControlConnection {
  private readonly poller: NativePoller;
  private readonly headerBuf = Buffer.alloc(HEADER_SIZE);
  private headerGot = 0;
  private header: Header | undefined;
  private payload: Buffer | undefined;
  private payloadGot = 0;
  private pendingFds: number[] = [];
  private closed = false;
  /** Reading stopped while a held message waits (`hold`). */
  private held = false;

  constructor(
    private readonly native: NativeBinding,
    readonly fd: number,
    private readonly log: Logger,
    private readonly events: ConnectionEvents,
  ) {
    this.poller = new native.Poller(fd, (status) => this.onReadable(status));
  }

  start(): void {
    this.poller.start(READABLE);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends one whole message with optional fds (which stay owned by the caller). */
  send(buf: Buffer, fds: number[] = []): void {
    if (this.closed) return;
    const n = call('sendmsg', () => this.native.sendMsg(this.fd, buf, fds));
    if (n !== buf.length) throw new ProtocolError(ErrorCode.BadSize, `short send: ${n} of ${buf.length} bytes`);
  }

  /** Closes the socket, the poller and any fds of a half-read message. Idempotent. */
  close(reason?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.poller.close();
    this.closeFds(this.pendingFds);
    this.pendingFds = [];
    this.native.close(this.fd);
    this.events.onClose(reason);
  }

  private closeFds(fds: number[]): void {
    for (const fd of fds) this.native.close(fd);
  }

  /**
   * Runs `fn` in `ms`, reading nothing meanwhile (a delayed reply keeps the order of
   * messages); errors thrown by `fn` are handled as a message's are. Then reading resumes.
   */
  hold(ms: number, fn: () => void): void {
    this.held = true;
    this.poller.stop();
    setTimeout(() => {
      if (this.closed) return;
      this.held = false;
      this.guarded(fn);
      if (!this.closed) {
        this.poller.start(READABLE);
        this.guarded(() => this.readAvailable());
      }
    }, ms);
  }

  private onReadable(status: number): void {
    if (this.closed) return;
    this.guarded(() => {
      if (status < 0) throw new ProtocolError(ErrorCode.PeerClosedMidMessage, `poll error ${status}`);
      this.readAvailable();
    });
  }

  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      const e = err as VunError;
      if (e.recovery === 'close-connection' || e.code === ErrorCode.HostIo) {
        this.log.warn({ err: e, code: e.code }, 'closing connection');
        this.close(e);
        return;
      }
      // Anything else is our own bug: close rather than serve a session in an unknown state.
      this.log.error({ err }, 'internal error while handling a message; closing connection');
      this.close(err as Error);
    }
  }

  private readAvailable(): void {
    for (;;) {
      if (this.closed || this.held) return;
      if (!this.header) {
        const r = call('recvmsg', () =>
          this.native.recvMsg(this.fd, this.headerBuf, this.headerGot, HEADER_SIZE - this.headerGot, MAX_FDS),
        );
        this.pendingFds.push(...r.fds);
        if (r.ctrunc) throw new ProtocolError(ErrorCode.FdsTruncated, 'fds truncated (MSG_CTRUNC)');
        if (r.extraFds > 0) {
          throw new ProtocolError(ErrorCode.BadFdCount, `more than ${MAX_FDS} fds in one message`, {
            extra: r.extraFds,
          });
        }
        if (r.bytes < 0) return;
        if (r.bytes === 0) return this.peerClosed();
        this.headerGot += r.bytes;
        if (this.headerGot < HEADER_SIZE) continue;
        const h = decodeHeader(this.headerBuf);
        checkHeader(h);
        this.header = h;
        this.payload = Buffer.alloc(h.size);
        this.payloadGot = 0;
      }
      const h = this.header;
      const payload = this.payload as Buffer;
      if (this.payloadGot < h.size) {
        const r = call('recvmsg', () =>
          this.native.recvMsg(this.fd, payload, this.payloadGot, h.size - this.payloadGot, 0),
        );
        if (r.extraFds > 0 || r.ctrunc) {
          throw new ProtocolError(ErrorCode.BadFdCount, `${requestName(h.request)}: fds sent inside the payload`);
        }
        if (r.bytes < 0) return;
        if (r.bytes === 0) return this.peerClosed();
        this.payloadGot += r.bytes;
        if (this.payloadGot < h.size) continue;
      }
      const msg: RawMessage = { header: h, payload, fds: this.pendingFds };
      this.pendingFds = [];
      this.header = undefined;
      this.payload = undefined;
      this.headerGot = 0;
      this.events.onMessage(msg);
    }
  }

  private peerClosed(): void {
    if (this.headerGot > 0 || this.header || this.pendingFds.length > 0) {
      const err = new ProtocolError(ErrorCode.PeerClosedMidMessage, 'peer closed in the middle of a message', {
        headerBytes: this.headerGot,
        payloadBytes: this.payloadGot,
      });
      this.log.warn({ code: err.code, ...err.details }, err.message);
      this.close(err);
      return;
    }
    this.log.info('peer closed the connection');
    this.close();
  }
}
