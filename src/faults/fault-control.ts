/**
 * The fault plan as a backend runs it. The control: load a plan (checked first: a bad one
 * changes nothing) or clear it. Each session: its data plane takes the plan's vring rules, its
 * connection the plan's disconnect timers, and every request passes the session rules' filter
 * (close, NACK, a late reply, masked feature offers) before the handler table sees it. What
 * status reads: the plan in force and what each rule injected.
 */
import type { Logger } from 'pino';
import { ErrorCode, InjectedFault } from '../errors.js';
import type { DispatchObserver } from '../vhost-user/handlers.js';
import {
  encodeMessage,
  encodeU64,
  Flags,
  HEADER_SIZE,
  type RawMessage,
  Request,
  requestName,
} from '../vhost-user/codec.js';
import { type FaultSink, FaultLog } from './log.js';
import { type CompiledPlan, compilePlan, type FaultPlan } from './plan.js';
import { SessionFaults } from './session-faults.js';

/** The plan in force and what each of its rules injected in this session. */
export interface FaultsView {
  plan: FaultPlan | null;
  rules: ReturnType<FaultLog['perRule']>;
}

/** What the filter does to a connection (transport/connection.ts ControlConnection). */
export interface FaultConnection {
  readonly isClosed: boolean;
  send(bytes: Buffer): void;
  close(reason: Error): void;
  /** Reads nothing more for `ms`, then runs `fn`. */
  hold(ms: number, fn: () => void): void;
}

/** Where a session's vring rules go (its data plane). */
export interface FaultTarget {
  setFaults(plan: CompiledPlan | undefined, sink: FaultSink | undefined): void;
}

export class FaultControl {
  /** Every injected fault, logged and counted (one log for the life of the process). */
  readonly log: FaultLog;
  /** The plan in force (applied to every session from its start), or undefined. */
  private plan: CompiledPlan | undefined;
  /** The plan's session rules (undefined: none), and the current session's disconnect timers. */
  private sessionFaults: SessionFaults | undefined;
  private timers: NodeJS.Timeout[] = [];
  private current: { target: FaultTarget; conn: FaultConnection; startMs: number } | undefined;

  constructor(
    private readonly vrings: number,
    out: string | NodeJS.WritableStream | undefined,
    private readonly logger: Logger,
  ) {
    this.log = new FaultLog(out);
  }

  /** The fault plan in force, as loaded (undefined: none). */
  get faultPlan(): FaultPlan | undefined {
    return this.plan?.plan;
  }

  /**
   * Validates and loads a fault plan: it applies to the current session from now on and to
   * every later session from its start. A bad plan throws (VUN_FAULT_PLAN_INVALID, every problem
   * with its path) and the plan in force stays as it was.
   */
  load(input: unknown, source = 'plan'): FaultPlan {
    const compiled = compilePlan(input, this.vrings, source);
    this.plan = compiled;
    this.log.use(compiled.plan);
    this.current?.target.setFaults(compiled, this.log);
    this.useSessionFaults(compiled);
    if (this.sessionFaults && this.current) {
      this.sessionFaults.begin(this.current.startMs);
      this.armDisconnects(this.current.conn);
    }
    this.logger.info({ rules: compiled.plan.rules.length, seed: compiled.plan.seed }, 'fault plan loaded');
    return compiled.plan;
  }

  /** No fault plan from now on. */
  clear(): void {
    this.plan = undefined;
    this.current?.target.setFaults(undefined, undefined);
    this.useSessionFaults(undefined);
    this.logger.info('fault plan cleared');
  }

  view(): FaultsView {
    const plan = this.faultPlan;
    return plan ? { plan, rules: this.log.perRule() } : { plan: null, rules: [] };
  }

  /** Ms since the current session started (undefined without one): where plan windows count from. */
  sessionMs(): number | undefined {
    return this.current ? performance.now() - this.current.startMs : undefined;
  }

  /** A session starts: its data plane takes the plan, its connection the plan's disconnects. */
  begin(target: FaultTarget, conn: FaultConnection): void {
    if (this.plan) {
      this.log.use(this.plan.plan);
      target.setFaults(this.plan, this.log);
    }
    this.current = { target, conn, startMs: performance.now() };
    this.sessionFaults?.begin(this.current.startMs);
    this.armDisconnects(conn);
  }

  /** The session is over: its timers stop. */
  end(): void {
    for (const t of this.timers.splice(0)) clearTimeout(t);
    this.current = undefined;
  }

  private useSessionFaults(plan: CompiledPlan | undefined): void {
    for (const t of this.timers.splice(0)) clearTimeout(t);
    this.sessionFaults = plan?.session.length ? new SessionFaults(plan, this.log) : undefined;
  }

  /** Timers for the plan's disconnects in this session (those still ahead). */
  private armDisconnects(conn: FaultConnection): void {
    const sf = this.sessionFaults;
    if (!sf) return;
    for (const d of sf.disconnects()) {
      const inMs = d.atMs - sf.elapsedMs();
      if (inMs < 0) continue;
      const timer = setTimeout(() => {
        if (conn.isClosed || this.sessionFaults !== sf || !sf.takeDisconnect(d.index)) return;
        this.logger.warn({ atMs: d.atMs }, 'fault plan: disconnecting the front-end');
        conn.close(new InjectedFault(ErrorCode.FaultDisconnect, 'fault plan: disconnect', { atMs: d.atMs }));
      }, inMs);
      this.timers.push(timer);
    }
  }

  /**
   * One request through the session rules: `handle(observer)` runs the handler table and sends
   * the reply now, later (delay-reply) or never (close-at, nack: answered here). The observer
   * handed on masks the feature offers first (offer-mask), so the trace shows what was sent.
   */
  filter(
    msg: RawMessage,
    canNack: boolean,
    conn: FaultConnection,
    closeFds: () => void,
    log: Logger,
    observer: DispatchObserver | undefined,
    handle: (observer: DispatchObserver | undefined) => void,
  ): void {
    const sf = this.sessionFaults;
    if (!sf) return handle(observer);
    const name = requestName(msg.header.request);
    const verdict = sf.verdict(name, canNack);
    switch (verdict.kind) {
      case 'close': {
        closeFds();
        const err = new InjectedFault(ErrorCode.FaultDisconnect, `fault plan: close-at (${verdict.rule})`, {
          request: name,
        });
        observer?.start();
        observer?.done(err, undefined);
        log.warn({ request: name }, 'fault plan: closing the connection at this message');
        conn.close(err);
        return;
      }
      case 'nack': {
        closeFds();
        const bytes = encodeMessage(msg.header.request, Flags.VERSION | Flags.REPLY, encodeU64(1n));
        observer?.start();
        observer?.done(undefined, { bytes, ack: true, nack: true });
        log.warn({ request: name }, 'fault plan: NACK');
        conn.send(bytes);
        return;
      }
      case 'delay':
        log.warn({ request: name, ms: verdict.ms }, 'fault plan: delaying the reply');
        conn.hold(verdict.ms, () => handle(masked(sf, msg, observer)));
        return;
      case 'handle':
        handle(masked(sf, msg, observer));
    }
  }
}

/** An observer that masks a GET_FEATURES or GET_PROTOCOL_FEATURES reply's offer (offer-mask). */
function masked(
  sf: SessionFaults,
  msg: RawMessage,
  observer: DispatchObserver | undefined,
): DispatchObserver | undefined {
  const r = msg.header.request;
  const offer =
    r === Request.GET_FEATURES
      ? 'GET_FEATURES'
      : r === Request.GET_PROTOCOL_FEATURES
        ? 'GET_PROTOCOL_FEATURES'
        : undefined;
  if (!offer) return observer;
  return {
    start: () => observer?.start(),
    done: (err, reply) => {
      if (reply && !reply.ack)
        reply.bytes.writeBigUInt64LE(sf.offer(offer, reply.bytes.readBigUInt64LE(HEADER_SIZE)), HEADER_SIZE);
      observer?.done(err, reply);
    },
  };
}
