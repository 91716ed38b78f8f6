/** Shared test plumbing: an in-process backend on a temp socket, fd counting, waiting. */
import type { CoalesceConfig } from '../../src/net/coalesce.js';
import type { FaultLine } from '../../src/faults/log.js';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { type BackendOptions, VhostUserNetBackend } from '../../src/backend.js';
import { silentLogger } from '../../src/log.js';
import { loadNative } from '../../src/native.js';
import type { Session } from '../../src/vhost-user/session.js';
import type { ControlConnection } from '../../src/transport/connection.js';
import { type DriverPair, MockFrontend } from './mock-frontend.js';
import { NativeDataPlane } from '../../src/net/native-data-plane.js';
import { TsDataPlane } from '../../src/net/ts-data-plane.js';
import type { Observers } from '../../src/trace/observe.js';
import type { HostBackendSpec } from '../../src/host/host-backend.js';
import type { Steering } from '../../src/net/rss.js';

export const native = loadNative();

/** Number of open fds of this process. */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length - 1; // minus the fd readdir itself used
}

export function tempDir(prefix = 'vun-test-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export { waitFor } from '../../src/util/wait.js';

export interface Served {
  backend: VhostUserNetBackend;
  path: string;
  connect(): MockFrontend;
  /** Resolves with the next session the backend starts. */
  nextSession(): Promise<Session>;
  /** Resolves when the current session is closed (at once when there is none). */
  sessionClosed(): Promise<Error | undefined>;
  stop(): void;
}

export type DatapathKind = 'native' | 'ts';

export function serve(
  opts: Partial<BackendOptions> = {},
  host: HostBackendSpec = { kind: 'null' },
  datapath: DatapathKind = 'native',
  steering?: Steering,
  threadOf?: number[],
  observe?: Observers,
  /** C++ data path only: interrupt coalescing and busy-polling. */
  tuning: { coalesce?: CoalesceConfig; pollUs?: number } = {},
): Served {
  const tmp = tempDir();
  const path = join(tmp.dir, 'vhost.sock');
  const o: BackendOptions = {
    socketPath: path,
    client: false,
    socketMode: 0o600,
    queuePairs: 1,
    reconnectMinMs: 20,
    reconnectMaxMs: 200,
    observers: observe,
    ...opts,
  };
  const backend = new VhostUserNetBackend(o, silentLogger(), (n, l, events) => {
    const h = { spec: host, fds: [], close: () => {} };
    const common = { queuePairs: o.queuePairs, host: h, steering, observe };
    return datapath === 'ts'
      ? new TsDataPlane(n, common, l, events)
      : new NativeDataPlane(n, { ...common, threadOf, ...tuning }, l, events);
  });
  backend.start();
  return {
    backend,
    path,
    connect: () => MockFrontend.connect(native, path),
    nextSession: () => new Promise((r) => backend.once('session', r)),
    sessionClosed: () =>
      new Promise((r) => {
        if (!backend.session) r(undefined);
        else backend.once('sessionClosed', (_s, reason) => r(reason));
      }),
    stop: () => {
      backend.stop();
      tmp.cleanup();
    },
  };
}

/** Ends a test's session (front-end closed, the session seen closed) and stops the backend. */
export async function shutdown(srv: Served | undefined, fe: MockFrontend | undefined): Promise<void> {
  if (!srv) return;
  const closed = srv.sessionClosed();
  fe?.close();
  await closed;
  srv.stop();
}

/**
 * Connects the mock front-end to `srv` and brings a device up: handshake, `features`, guest
 * RAM, every vring of `queuePairs` pairs set up and enabled (bringUp throws on any refusal).
 */
export async function bringUpDevice(srv: Served, features: bigint, queuePairs = 1) {
  const next = srv.nextSession();
  const fe = srv.connect();
  const session = await next;
  await fe.handshake();
  const { ram, pairs } = await fe.bringUp(features, queuePairs);
  return { fe, session, ram, pairs };
}

/**
 * A device on `host` with `plan` loaded before the front-end connects, brought up with
 * `features`; `lines` collects the fault log. The caller shuts `srv` and `fe` down.
 */
export async function deviceWithPlan(
  datapath: DatapathKind,
  host: 'loopback' | 'null',
  plan: unknown,
  features: bigint,
) {
  const srv = serve({ queuePairs: 1 }, { kind: host }, datapath);
  const lines: FaultLine[] = [];
  srv.backend.faultLog.on('line', (l) => lines.push(l));
  srv.backend.loadFaults(plan);
  const d = await bringUpDevice(srv, features);
  return { ...d, srv, lines, pair: d.pairs[0] as DriverPair };
}

/**
 * The backend and mock front-end the current test serves (set `srv` and `fe` as the test makes
 * them), shut down after each test of the file: one call at the top of a test file.
 */
export function servedPerTest(): { srv: Served | undefined; fe: MockFrontend | undefined } {
  const held: { srv: Served | undefined; fe: MockFrontend | undefined } = { srv: undefined, fe: undefined };
  afterEach(async () => {
    await shutdown(held.srv, held.fe);
    held.srv = held.fe = undefined;
  });
  return held;
}

/**
 * Devices with a fault plan for one test file: `device` brings one up (the previous one is the
 * caller's to end first), `end` shuts the current one down (for afterEach).
 */
export function planDevices() {
  let current: { srv: Served; fe: MockFrontend } | undefined;
  return {
    async device(datapath: DatapathKind, host: 'loopback' | 'null', plan: unknown, features: bigint) {
      const d = await deviceWithPlan(datapath, host, plan, features);
      current = { srv: d.srv, fe: d.fe };
      return d;
    },
    get srv(): Served | undefined {
      return current?.srv;
    },
    async end(): Promise<void> {
      const c = current;
      current = undefined;
      await shutdown(c?.srv, c?.fe);
    },
  };
}

/**
 * A connection served without the event loop turning (fuzzing and leak tests run thousands):
 * connects to `srv`, has the backend accept at once, and gives `read()`, which makes the
 * connection read what is waiting right now (as its poller would).
 */
export function connectNow(srv: Served): {
  fd: number;
  conn: ControlConnection;
  session: Session;
  read(): void;
} {
  const backend = srv.backend as unknown as {
    acceptOne(): void;
    connection: ControlConnection | undefined;
    current: Session | undefined;
  };
  const fd = native.unixConnect(srv.path);
  backend.acceptOne();
  const conn = backend.connection;
  const session = backend.current;
  if (!conn || !session) throw new Error('the backend did not take the connection');
  const read = () => (conn as unknown as { onReadable(status: number): void }).onReadable(1);
  return { fd, conn, session, read };
}
