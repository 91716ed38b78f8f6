/**
 * A QMP client (QEMU's JSON machine protocol, docs/interop/qmp-spec.rst) over a unix socket:
 * enough to drive a migration from tests and benchmarks. One command at a time; events are
 * kept in `events`.
 */
import { connect, type Socket } from 'node:net';
import { waitFor } from '../util/wait.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class Qmp {
  readonly events: QmpEvent[] = [];
  private buf = '';
  private waiting: { resolve(v: unknown): void; reject(e: Error): void } | undefined;
  private greeted = false;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', (e) => this.waiting?.reject(e));
    sock.on('close', () => this.waiting?.reject(new Error('QMP socket closed')));
  }

  /** Connects (waiting up to `timeoutMs` for QEMU to create the socket) and leaves capability negotiation mode. */
  static async open(path: string, timeoutMs = 15_000): Promise<Qmp> {
    const end = Date.now() + timeoutMs;
    let sock: Socket | undefined;
    while (!sock) {
      sock = await new Promise<Socket | undefined>((resolve) => {
        const s = connect(path);
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      });
      if (!sock) {
        if (Date.now() > end) throw new Error(`timed out waiting for the QMP socket ${path}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const q = new Qmp(sock);
    await waitFor(() => q.greeted, timeoutMs, 'QMP greeting');
    await q.execute('qmp_capabilities');
    return q;
  }

  /** Runs one command; resolves with its `return`, rejects with its `error`. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.waiting) return Promise.reject(new Error('QMP: one command at a time'));
    return new Promise<T>((resolve, reject) => {
      this.waiting = { resolve: resolve as (v: unknown) => void, reject };
      this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as {
        QMP?: unknown;
        event?: string;
        return?: unknown;
        error?: { class: string; desc: string };
      };
      if (msg.QMP) this.greeted = true;
      else if (msg.event) this.events.push(msg as QmpEvent);
      else if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        if (msg.error) w.reject(new Error(`QMP ${msg.error.class}: ${msg.error.desc}`));
        else w.resolve(msg.return);
      }
    }
  }
}
