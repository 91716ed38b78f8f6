/**
 * The backend process's core: listens (server mode) or dials (client mode), runs one session
 * per connection, and after a disconnect tears the session down completely and serves the
 * next connection. One front-end at a time: later connections wait in the listen backlog.
 */
import { EventEmitter } from 'node:events';
import { chownSync, existsSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { hex } from './features.js';
import { call, loadNative, type NativeBinding, type NativePoller } from './native.js';
import { ControlConnection, type RawMessage } from './transport/connection.js';
import type { DataPlaneFactory } from './net/data-plane.js';
import type { Steering } from './net/rss.js';
import { NativeDataPlane } from './net/native-data-plane.js';
import { type DispatchObserver, dispatch } from './vhost-user/handlers.js';
import {
  OFFERED_PROTOCOL_FEATURES,
  offeredFeatures,
  type RingLayout,
  queueName,
  Session,
  type SessionView,
} from './vhost-user/session.js';
import { encodeMessage, type Header, requestName } from './vhost-user/codec.js';
import type { MessageTrace } from './trace/message-trace.js';
import type { Observers } from './trace/observe.js';
import { ErrorCode, HostIoError } from './errors.js';
import { ProtocolFeature } from './features.js';
import { FaultControl, type FaultsView } from './faults/fault-control.js';
import type { FaultLog } from './faults/log.js';
import type { FaultPlan } from './faults/plan.js';
import { RingJournal } from './virtio/ring-journal.js';

export interface BackendOptions {
  /** Socket path (server mode: created; client mode: dialled). */
  socketPath?: string;
  /** An inherited listening socket (QEMU's `--fd` convention); overrides socketPath. */
  listenFd?: number;
  client: boolean;
  /** File mode of the created socket (server mode). */
  socketMode: number;
  /** Owner and group of the created socket (-1: unchanged). */
  socketOwner?: { uid: number; gid: number };
  queuePairs: number;
  /** Client mode: first and largest delay between dial attempts. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  features?: bigint;
  protocolFeatures?: bigint;
  /** `--ring`: which ring layouts are offered (default auto: packed offered). */
  ring?: RingLayout;
  /** Protocol trace: every message both ways, decoded (`--trace-messages`). */
  trace?: MessageTrace;
  /** Where injected faults are written as JSON lines (`--fault-log`; '-' for stdout). */
  faultLog?: string | NodeJS.WritableStream;
  /**
   * The observers the data planes are built with: when `capture` is set (`--pcap`), every
   * message both ways goes into it too (its `vhost-user` interface). Read at each message, so
   * a reload that replaces the capture is followed.
   */
  observers?: Pick<Observers, 'capture'>;
  /**
   * The ring journal (`--ring-state`): where packed rings keep their positions so a restarted
   * backend resumes them. `required`: a journal that cannot be opened stops start-up;
   * otherwise it is dropped with a warning.
   */
  ringState?: { path: string; required: boolean };
}

export interface BackendEvents {
  session: [Session];
  /** Every request received, just before it is handled (observers: tests, traces). */
  message: [Session, Header];
  sessionClosed: [Session, Error | undefined];
  listening: [string];
  /** A connected --fd's session ended: nothing more will be served. */
  finished: [];
}

const READABLE = 1;

/** What status, metrics and the ring page read of a backend: values, not its objects. */
export interface BackendView {
  /** Sessions served so far (a reconnect makes a new one). */
  readonly sessions: number;
  /** The current session, or undefined while no front-end is connected. */
  view(): SessionView | undefined;
  /** The fault plan in force and what it injected. */
  readonly faultPlan: FaultPlan | undefined;
  readonly faultLog: FaultLog;
  /** Ms since the current session started (fault windows count from there). */
  sessionMs(): number | undefined;
  /** The plan in force and what each of its rules injected in this session. */
  faults(): FaultsView;
}

export type { FaultsView } from './faults/fault-control.js';

export class VhostUserNetBackend extends EventEmitter<BackendEvents> implements BackendView {
  readonly native: NativeBinding;
  private listenFd = -1;
  /** --fd was a connected socket: its one session is all this backend serves. */
  private connectedFd = false;
  private createdSocket: string | undefined;
  private createdIno: number | undefined;
  private listenPoller: NativePoller | undefined;
  private connection: ControlConnection | undefined;
  private current: Session | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelay: number;
  private stopped = false;
  /** Sessions served so far (a reconnect makes a new one). */
  sessions = 0;
  /** The protocol trace (`--trace-messages`), replaced by a reload. */
  private messageTrace: MessageTrace | undefined;
  /** Steering set after start-up (SIGHUP reload); undefined: what the data-plane factory was given. */
  private steering: Steering | undefined;
  /** The fault plan: its control, each session's filter and timers, what it injected. */
  readonly faultControl: FaultControl;
  /** The ring journal, while open (`--ring-state`). */
  private journal: RingJournal | undefined;
  /** hrtime minus the epoch, in ns: capture timestamps from the monotonic clock. */
  private readonly hrtimeOffset = process.hrtime.bigint() - BigInt(Date.now()) * 1_000_000n;

  constructor(
    readonly options: BackendOptions,
    private readonly log: Logger,
    /** Makes each session's data plane; the default is the C++ one with the null host. */
    private readonly makeDataPlane: DataPlaneFactory = (n, l, events) =>
      new NativeDataPlane(
        n,
        { queuePairs: options.queuePairs, host: { spec: { kind: 'null' }, fds: [], close: () => {} } },
        l,
        events,
      ),
    native?: NativeBinding,
  ) {
    super();
    this.native = native ?? loadNative();
    this.reconnectDelay = options.reconnectMinMs;
    this.faultControl = new FaultControl(options.queuePairs * 2, options.faultLog, log);
    this.messageTrace = options.trace;
  }

  /** The fault plan in force, as loaded (undefined: none). */
  get faultPlan(): FaultPlan | undefined {
    return this.faultControl.faultPlan;
  }

  /** Every injected fault, logged and counted. */
  get faultLog(): FaultLog {
    return this.faultControl.log;
  }

  /** Loads a fault plan (FaultControl.load: a bad one throws and changes nothing). */
  loadFaults(input: unknown, source = 'plan'): FaultPlan {
    return this.faultControl.load(input, source);
  }

  /**
   * Receive steering from now on (SIGHUP reload): applied to the current session's data plane
   * at once, and to every later session from its start.
   */
  setSteering(steering: Steering): void {
    this.steering = steering;
    this.current?.tuning.setSteering(steering);
    this.log.info({ policy: steering.policy, table: steering.rss.table.length }, 'steering set');
  }

  /**
   * The observers (capture, ring trace) of the current session from now on (SIGHUP reload).
   * Later sessions take theirs from the data-plane factory, which the caller updates.
   */
  setObservers(observe: Observers): void {
    this.current?.tuning.setObservers(observe);
  }

  /** The protocol trace from now on (undefined: off); returns the previous one to close. */
  setMessageTrace(trace: MessageTrace | undefined): MessageTrace | undefined {
    const old = this.messageTrace;
    this.messageTrace = trace;
    return old;
  }

  /** No fault plan from now on. */
  clearFaults(): void {
    this.faultControl.clear();
  }

  get session(): Session | undefined {
    return this.current;
  }

  faults(): FaultsView {
    return this.faultControl.view();
  }

  /** Ms since the current session started (undefined without one): where plan windows count from. */
  sessionMs(): number | undefined {
    return this.faultControl.sessionMs();
  }

  /**
   * Handles one request: the fault plan's session rules first (close, NACK, a late reply,
   * masked offers), then the handler table; the reply is sent.
   */
  private handle(
    session: Session,
    conn: ControlConnection,
    msg: RawMessage,
    log: Logger,
    observer?: DispatchObserver,
  ): void {
    const canNack = msg.header.needReply && session.hasProtocolFeature(ProtocolFeature.REPLY_ACK);
    const closeFds = () => {
      for (const fd of msg.fds) this.native.close(fd);
    };
    this.faultControl.filter(msg, canNack, conn, closeFds, log, observer, (o) => {
      const reply = dispatch(session, msg, this.native, log, o);
      if (reply) conn.send(reply.bytes);
    });
  }

  view(): SessionView | undefined {
    return this.current?.view();
  }

  start(): void {
    this.openJournal();
    if (this.options.client) {
      this.dial();
      return;
    }
    if (this.options.listenFd !== undefined) {
      const adopted = call('adopt --fd', () => this.native.adoptUnixFd(this.options.listenFd as number));
      if (!adopted.listening) {
        // A connected socket is the session itself: served at once; when it ends there is
        // nothing to accept, and the backend says it is finished.
        this.log.info({ socket: `fd ${adopted.fd}` }, 'serving a connected --fd');
        this.connectedFd = true;
        this.serve(adopted.fd);
        return;
      }
      this.listenFd = adopted.fd;
    } else {
      const path = this.options.socketPath as string;
      this.makeSocketDir(path);
      this.listenFd = call(`listen on ${path}`, () => this.native.unixListen(path, this.options.socketMode, 4));
      const owner = this.options.socketOwner;
      if (owner) {
        try {
          chownSync(path, owner.uid, owner.gid);
        } catch (err) {
          this.native.close(this.listenFd);
          this.listenFd = -1;
          rmSync(path, { force: true });
          const e = err as NodeJS.ErrnoException;
          throw new HostIoError(ErrorCode.HostIo, `chown ${path}: ${e.message}`, e.code ?? 'EIO', 'chown');
        }
      }
      this.createdSocket = path;
      this.createdIno = lstatSync(path).ino;
    }
    this.listenPoller = new this.native.Poller(this.listenFd, () => this.acceptOne());
    this.listenPoller.start(READABLE);
    const where = this.createdSocket ?? `fd ${this.listenFd}`;
    this.log.info(
      {
        socket: where,
        mode: this.createdSocket ? `0${this.options.socketMode.toString(8)}` : undefined,
        owner: this.createdSocket ? this.options.socketOwner : undefined,
      },
      'listening',
    );
    this.emit('listening', where);
  }

  /**
   * The socket's directory, when it is missing (`/run/vhost-user-net` after a reboot): made
   * 0755 so a front-end running as another user can reach the socket, whose own mode and group
   * say who may connect; given the socket's owner and group.
   */
  private makeSocketDir(path: string): void {
    const dir = dirname(path);
    if (existsSync(dir)) return;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      const owner = this.options.socketOwner;
      if (owner) chownSync(dir, owner.uid, owner.gid);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new HostIoError(
        ErrorCode.HostIo,
        `cannot make the socket's directory ${dir}: ${e.message}`,
        e.code ?? 'EIO',
        'mkdir',
        {
          path: dir,
        },
      );
    }
    this.log.info({ dir }, 'made the socket directory');
  }

  private openJournal(): void {
    const want = this.options.ringState;
    if (!want || this.journal) return;
    try {
      const alive = (pid: number) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch (err) {
          return (err as NodeJS.ErrnoException).code === 'EPERM';
        }
      };
      this.journal = RingJournal.open(this.native, want.path, this.options.queuePairs * 2, alive);
      this.log.info({ path: want.path, file: this.journal.opened }, 'ring journal open');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const error = new HostIoError(
        ErrorCode.RingState,
        `ring journal ${want.path}: ${e.message}`,
        e.code ?? 'EIO',
        'open',
        { path: want.path },
      );
      if (want.required) throw error;
      this.log.warn(
        { path: want.path, err: e.message },
        'no ring journal: packed rings will not resume after a backend restart (--ring-state FILE names another place)',
      );
    }
  }

  /** Closes the connection (tearing the session down) and the listener. */
  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.connection?.close();
    this.listenPoller?.close();
    this.listenPoller = undefined;
    if (this.listenFd >= 0) {
      this.native.close(this.listenFd);
      this.listenFd = -1;
    }
    if (this.createdSocket) {
      // Remove our own socket file only: another backend may have replaced it since.
      try {
        if (lstatSync(this.createdSocket).ino === this.createdIno) rmSync(this.createdSocket);
      } catch {
        /* already gone */
      }
      this.createdSocket = undefined;
    }
    // The data plane stopped with the session above: nothing writes the journal now.
    this.journal?.close();
    this.journal = undefined;
    // Last: closing the connection above drained the session's last faults into it.
    this.faultLog.close();
  }

  /** Logs every vring's counters (at session end, and on SIGUSR1 from the CLI). */
  logCounters(session: Session | undefined = this.current, log: Logger = this.log): void {
    if (!session) return;
    session.vrings.forEach((v) => {
      const c = session.counters(v.index);
      if (v.num === 0 && c.frames === 0 && c.kicks === 0) return;
      log.info({ vring: v.index, queue: queueName(v.index), ...c }, 'vring counters');
    });
  }

  /**
   * What watches one request being handled: the message trace and the capture's vhost-user
   * interface (the request as it came, and the reply), when either is on.
   */
  private observerFor(id: number, msg: RawMessage): DispatchObserver | undefined {
    const fds = msg.fds.length;
    const trace = this.messageTrace;
    const capture = this.options.observers?.capture;
    if (!trace && !capture) return undefined;
    const name = requestName(msg.header.request);
    const at = process.hrtime.bigint() - this.hrtimeOffset; // the request's arrival, as epoch ns
    return {
      start: () => trace?.requestStart(),
      done: (err, reply) => {
        const seq = trace?.requestDone(id, msg.header, msg.payload, fds, err) ?? 0;
        if (reply) trace?.reply(id, seq, msg.header.request, reply.bytes, reply.ack);
        const refused = err ? ` (refused: ${(err as { code?: string }).code ?? err.message})` : '';
        capture?.writeMessages([
          {
            session: id,
            timeNs: at,
            direction: 'front-end->backend',
            bytes: encodeMessage(msg.header.request, msg.header.flags, msg.payload),
            fds,
            note: `${name}${refused}`,
          },
          ...(reply
            ? [
                {
                  session: id,
                  timeNs: process.hrtime.bigint() - this.hrtimeOffset,
                  direction: 'backend->front-end' as const,
                  bytes: reply.bytes,
                  fds: 0,
                  note: `${name} reply${reply.ack ? ' (REPLY_ACK)' : ''}`,
                },
              ]
            : []),
        ]);
      },
    };
  }

  private acceptOne(): void {
    if (this.connection) return;
    let fd: number;
    try {
      fd = this.native.unixAccept(this.listenFd);
    } catch (err) {
      this.log.error({ err }, 'accept failed');
      return;
    }
    if (fd < 0) return;
    // One front-end at a time: stop accepting until this session is over.
    this.listenPoller?.stop();
    this.serve(fd);
  }

  private dial(): void {
    if (this.stopped) return;
    const path = this.options.socketPath as string;
    let fd: number;
    try {
      fd = call(`connect to ${path}`, () => this.native.unixConnect(path));
    } catch (err) {
      const delay = this.reconnectDelay;
      this.reconnectDelay = Math.min(delay * 2, this.options.reconnectMaxMs);
      this.log.info(
        { socket: path, errno: (err as { errno?: string }).errno, retryInMs: delay },
        'front-end not reachable yet',
      );
      this.reconnectTimer = setTimeout(() => this.dial(), delay);
      return;
    }
    this.reconnectDelay = this.options.reconnectMinMs;
    this.log.info({ socket: path }, 'connected to front-end');
    this.serve(fd);
  }

  private serve(fd: number): void {
    const id = ++this.sessions;
    const log = this.log.child({ component: 'session', session: id });
    const session = new Session(
      this.native,
      {
        queuePairs: this.options.queuePairs,
        features: this.options.features ?? offeredFeatures(this.options.queuePairs, this.options.ring),
        protocolFeatures: this.options.protocolFeatures ?? OFFERED_PROTOCOL_FEATURES,
        requirePacked: this.options.ring === 'packed',
        ...(this.journal ? { journal: this.journal } : {}),
      },
      this.makeDataPlane,
      log,
    );
    if (this.steering) session.tuning.setSteering(this.steering);
    session.onChange((c) => {
      log.info(c, c.what);
      this.messageTrace?.change(id, c);
    });
    const conn = new ControlConnection(this.native, fd, log.child({ component: 'transport' }), {
      onMessage: (msg) => {
        log.debug(
          { request: requestName(msg.header.request), flags: hex(msg.header.flags), fds: msg.fds.length },
          'message',
        );
        this.emit('message', session, msg.header);
        const observer = this.observerFor(id, msg);
        this.handle(session, conn, msg, log, observer);
      },
      onClose: (reason) => {
        this.faultControl.end();
        this.logCounters(session, log);
        session.close();
        this.connection = undefined;
        this.current = undefined;
        log.info({ reason: reason?.message, code: (reason as { code?: string } | undefined)?.code }, 'session closed');
        this.emit('sessionClosed', session, reason);
        this.messageTrace?.session(id, 'closed', reason ? { reason: reason.message } : {});
        if (this.stopped) return;
        if (this.connectedFd) {
          this.emit('finished');
          return;
        }
        if (this.options.client) {
          this.reconnectTimer = setTimeout(() => this.dial(), this.options.reconnectMinMs);
        } else {
          this.listenPoller?.start(READABLE);
        }
      },
    });
    this.connection = conn;
    this.current = session;
    this.faultControl.begin(session.tuning, conn);
    log.info({ fd }, 'session started');
    this.messageTrace?.session(id, 'connected');
    this.emit('session', session);
    conn.start();
  }
}
