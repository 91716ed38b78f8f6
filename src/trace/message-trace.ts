/**
 * The protocol trace (`--trace-messages FILE|-`): one JSON object per vhost-user message in
 * both directions, decoded field by field, each reply paired with its request, and the session
 * state changes each request caused. Asynchronous changes (a ring started by its first kick, a
 * ring broken by the driver) are `event` records. `vhost-user-net explain` reads it back.
 */
import { closeTraceOutput, openTraceOutput, type TraceOutput } from '../util/output.js';
import type { Header } from '../vhost-user/codec.js';
import { Flags, requestName } from '../vhost-user/codec.js';
import type { SessionChange } from '../vhost-user/session.js';
import { describeReply, describeRequest } from './decode.js';

export interface TraceRecord {
  /** Milliseconds since the trace started. */
  t: number;
  time: string;
  session: number;
  seq: number;
  kind: 'request' | 'reply' | 'event' | 'session';
  dir?: 'front-end->backend' | 'backend->front-end';
  request?: string;
  requestNumber?: number;
  flags?: { raw: string; version: number; reply: boolean; needReply: boolean };
  size?: number;
  fds?: number;
  payload?: Record<string, unknown>;
  /** On replies: the seq of the request they answer. */
  replyTo?: number;
  /** REPLY_ACK (a u64 status) rather than the request's own reply. */
  ack?: boolean;
  changes?: SessionChange[];
  error?: { code?: string; message: string };
  what?: string;
  [k: string]: unknown;
}

const decodeFlags = (f: number) => ({
  raw: `0x${f.toString(16)}`,
  version: f & Flags.VERSION_MASK,
  reply: (f & Flags.REPLY) !== 0,
  needReply: (f & Flags.NEED_REPLY) !== 0,
});

export class MessageTrace {
  private readonly out: TraceOutput;
  private readonly t0 = Date.now();
  private seq = 0;
  /** Changes collected while a request is being handled. */
  private pending: SessionChange[] | undefined;

  constructor(target: string | NodeJS.WritableStream) {
    this.out = openTraceOutput(target);
  }

  private write(r: Omit<TraceRecord, 't' | 'time' | 'seq'>): number {
    const seq = ++this.seq;
    const rec = { t: Date.now() - this.t0, time: new Date().toISOString(), seq, ...r };
    this.out.write(`${JSON.stringify(rec)}\n`);
    return seq;
  }

  session(session: number, what: 'connected' | 'closed', extra: Record<string, unknown> = {}): void {
    this.write({ session, kind: 'session', what, ...extra });
  }

  /** Called before a request is handled; returns a token for `requestDone`. */
  requestStart(): void {
    this.pending = [];
  }

  /** Session changes go to the request being handled, or become events. */
  change(session: number, c: SessionChange): void {
    if (this.pending) this.pending.push(c);
    else this.write({ session, kind: 'event', what: c.what, changes: [c] });
  }

  requestDone(session: number, h: Header, payload: Buffer, fds: number, error?: Error): number {
    const changes = this.pending ?? [];
    this.pending = undefined;
    return this.write({
      session,
      kind: 'request',
      dir: 'front-end->backend',
      request: requestName(h.request),
      requestNumber: h.request,
      flags: decodeFlags(h.flags),
      size: h.size,
      fds,
      payload: describeRequest(h.request, payload),
      ...(changes.length ? { changes } : {}),
      ...(error ? { error: { code: (error as { code?: string }).code, message: error.message } } : {}),
    });
  }

  reply(session: number, requestSeq: number, request: number, bytes: Buffer, ack: boolean): void {
    const flags = bytes.readUInt32LE(4);
    const payload = bytes.subarray(12);
    this.write({
      session,
      kind: 'reply',
      dir: 'backend->front-end',
      request: requestName(request),
      requestNumber: request,
      flags: decodeFlags(flags),
      size: payload.length,
      fds: 0,
      payload: describeReply(request, payload, ack),
      replyTo: requestSeq,
      ack,
    });
  }

  close(): void {
    closeTraceOutput(this.out);
  }
}
