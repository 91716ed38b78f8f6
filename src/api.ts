/**
 * The programmatic API (the package's entry point): start a backend with options and a fault
 * plan, load or clear plans while it runs, subscribe to faults and sessions, read counters,
 * stop. A test of a guest driver is written against this; docs/faults.md has one, run by the
 * test suite (test/examples/faults-api.test.ts).
 */
import { EventEmitter } from 'node:events';
import pino from 'pino';
import { type FaultsView, VhostUserNetBackend } from './backend.js';
import { ConfigError, ErrorCode } from './errors.js';
import type { FaultLine } from './faults/log.js';
import type { FaultPlan } from './faults/plan.js';
import { openHostBackend, parseHostBackend } from './host/host-backend.js';
import { loadNative } from './native.js';
import { COALESCE_DEFAULTS, type CoalesceConfig } from './net/coalesce.js';
import type { VringCounters } from './net/counters.js';
import { dataPlaneFactory } from './net/make-data-plane.js';
import { queueName } from './vhost-user/session.js';

export type { FaultsView } from './backend.js';
export type { FaultLine } from './faults/log.js';
export type { FaultPlan, FaultRuleSpec } from './faults/plan.js';
export type { VringCounters } from './net/counters.js';
export { ConfigError, ErrorCode, VunError } from './errors.js';
export { compilePlan } from './faults/plan.js';
// The fault conditions against guest kernels (as `vhost-user-net conditions`; root, QEMU).
export { failures, runConditions } from './conditions/runner.js';
export type { ConditionResult, ConditionsOptions, ConditionsReport, Verdict } from './conditions/runner.js';
export type { Signature } from './conditions/signatures.js';
// The explorer (as `vhost-user-net explore`; root, QEMU): generated plans, minimized findings.
export { explore } from './explore/explorer.js';
export type { ExploreOptions } from './explore/explorer.js';
export { guestRunner } from './explore/round-guest.js';
export { generatePlan } from './explore/generate.js';
export { minimize } from './explore/minimize.js';
export type { ExploreState, Found, PlanRun, PlanRunner } from './explore/types.js';
export type { KernelSpec } from './guest/kernels.js';

export interface StartOptions {
  /** The vhost-user socket: created (server mode, the default) or dialled (`client`). */
  socket: string;
  client?: boolean;
  /** Queue pairs offered (default 1). */
  queuePairs?: number;
  /** Where frames go, as `--backend` spells it: null (default), loopback, tap:NAME, af-packet:IFACE. */
  host?: string;
  /** The C++ data path (default) or the TS reference. */
  datapath?: 'native' | 'ts';
  /** A fault plan in force from the first session on (validated: a bad one throws). */
  faults?: FaultPlan;
  /** Where fault lines are written as JSON lines (a file path or a stream). */
  faultLog?: string | NodeJS.WritableStream;
  /** Log level of the backend's own log (pino, to stderr); default 'silent'. */
  logLevel?: 'silent' | 'error' | 'warn' | 'info' | 'debug';
  /** Interrupt coalescing on the C++ data path (default: adaptive, 50 us, 64 frames). */
  coalesce?: Partial<CoalesceConfig>;
}

export interface SessionInfo {
  /** 1 for the first front-end connection, 2 after a reconnect, ... */
  id: number;
}

export interface SessionEnd extends SessionInfo {
  /** Why it ended (undefined: the front-end closed it), with the error code when there is one. */
  reason?: string;
  code?: string;
}

export interface BackendEvents {
  /** Every injected fault, as the fault log writes it. */
  fault: [FaultLine];
  /** A front-end connected. */
  session: [SessionInfo];
  sessionClosed: [SessionEnd];
}

export interface VringStatus extends VringCounters {
  vring: number;
  queue: string;
}

/** A running backend. */
export class Backend extends EventEmitter<BackendEvents> {
  private stopped = false;

  /** @internal use startBackend */
  constructor(
    private readonly core: VhostUserNetBackend,
    private readonly closeHost: () => void,
    readonly socket: string,
  ) {
    super();
    core.faultLog.on('line', (l) => this.emit('fault', l));
    core.on('session', () => this.emit('session', { id: core.sessions }));
    core.on('sessionClosed', (_s, reason) =>
      this.emit('sessionClosed', {
        id: core.sessions,
        ...(reason ? { reason: reason.message, code: (reason as { code?: string }).code } : {}),
      }),
    );
  }

  /** Loads a plan (replacing the one in force); a bad plan throws a ConfigError and changes nothing. */
  loadFaults(plan: unknown): FaultPlan {
    return this.core.loadFaults(plan, 'loadFaults');
  }

  clearFaults(): void {
    this.core.clearFaults();
  }

  /** The plan in force and what each rule injected in this session. */
  faults(): FaultsView {
    return this.core.faults();
  }

  /** Ms since the current session started (fault windows, atMs, count from there). */
  sessionMs(): number | undefined {
    return this.core.sessionMs();
  }

  /** Each vring's counters in the current session (empty without one). */
  counters(): VringStatus[] {
    const s = this.core.session;
    if (!s) return [];
    return s.vrings.map((v) => ({ vring: v.index, queue: queueName(v.index), ...s.counters(v.index) }));
  }

  /** Closes the session, the socket and the host side; the fault log is flushed. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.core.stop();
    this.closeHost();
    await new Promise((r) => setImmediate(r));
  }
}

/** Starts a backend listening (or dialling) on `options.socket`. */
export async function startBackend(options: StartOptions): Promise<Backend> {
  const native = loadNative();
  const queuePairs = options.queuePairs ?? 1;
  if (!Number.isInteger(queuePairs) || queuePairs < 1)
    throw new ConfigError(ErrorCode.ConfigInvalid, 'queuePairs must be a whole number >= 1', []);
  const host = openHostBackend(native, parseHostBackend(options.host ?? 'null'), { queuePairs });
  const log = pino({ level: options.logLevel ?? 'silent' }, pino.destination({ fd: 2, sync: true }));
  const core = new VhostUserNetBackend(
    {
      socketPath: options.socket,
      client: options.client ?? false,
      socketMode: 0o600,
      queuePairs,
      reconnectMinMs: 100,
      reconnectMaxMs: 2000,
      faultLog: options.faultLog,
    },
    log,
    dataPlaneFactory({
      datapath: options.datapath ?? 'native',
      queuePairs,
      host,
      coalesce: { ...COALESCE_DEFAULTS, ...options.coalesce },
    }),
    native,
  );
  try {
    if (options.faults) core.loadFaults(options.faults, 'startBackend');
    core.start();
  } catch (err) {
    host.close();
    throw err;
  }
  return new Backend(core, () => host.close(), options.socket);
}
