/**
 * Live introspection over HTTP (off by default; loopback only unless allowed): `/status` as
 * JSON (features by name, memory regions, every vring's state and counters) and `/metrics` as
 * Prometheus text (prom-client), `/rings` (every ring read from guest memory) and the page that
 * draws them live (`/rings.html`), all read at request time: nothing is collected on the data
 * path.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { BackendView } from '../backend.js';
import type { FaultControl } from '../faults/fault-control.js';
import { ConfigError, ErrorCode } from '../errors.js';
import { featureNames, hex, ProtocolFeature, VirtioFeature } from '../features.js';
import type { CounterName, VringCounters } from '../net/counters.js';
import type { CoalesceConfig } from '../net/coalesce.js';
import type { SessionView } from '../vhost-user/session.js';
import { statusNames } from '../trace/decode.js';
import type { Observers } from '../trace/observe.js';
import { packedInFlight } from '../virtio/ring-types.js';
import { RING_PAGE } from './ring-page.js';
import { ringsOf } from './rings.js';

/** Settings /status reports beside the session (the CLI passes what it configured). */
export interface StatusSettings {
  /** Interrupt coalescing, with the data path it applies to (the C++ one only). */
  coalesce?: CoalesceConfig & { datapath: 'native' | 'ts' };
}

/** The /status document. */
export function statusOf(
  backend: BackendView,
  observe: Observers = {},
  settings: StatusSettings = {},
): Record<string, unknown> {
  const s = backend.view();
  const observation = observationOf(observe);
  const interrupts = interruptsOf(settings);
  if (!s) return { connected: false, sessions: backend.sessions, observation, interrupts, faults: faultsOf(backend) };
  const acked = s.ackedFeatures ?? 0n;
  return {
    connected: true,
    observation,
    interrupts,
    faults: faultsOf(backend),
    session: backend.sessions,
    queuePairs: s.queuePairs,
    features: { offered: hex(s.offeredFeatures), acked: hex(acked), names: featureNames(acked, VirtioFeature) },
    protocolFeatures: {
      acked: hex(s.ackedProtocolFeatures),
      names: featureNames(s.ackedProtocolFeatures, ProtocolFeature),
    },
    status: { value: hex(s.status), bits: statusNames(s.status) },
    mtu: s.mtu,
    lint: s.lint,
    memory: s.memory.map((r) => ({
      guestAddr: hex(r.guestAddr),
      size: hex(r.size),
      userAddr: hex(r.userAddr),
      refs: r.refs,
      sealed: r.sealed,
    })),
    // Live migration: the dirty log's size and whether the device marks it now.
    dirtyLog: s.dirtyLog ?? null,
    vrings: s.vrings.map((v) => ({
      index: v.index,
      queue: v.queue,
      size: v.num,
      started: v.started,
      enabled: v.enabled,
      broken: v.broken,
      layout: s.packed ? 'packed' : 'split',
      // Packed rings: position | wrap counter << 15, as SET_VRING_BASE encodes them.
      lastAvailIdx: v.position.lastAvailIdx,
      usedIdx: v.position.usedIdx,
      inFlight: !v.started
        ? 0
        : s.packed
          ? packedInFlight(v.position.lastAvailIdx, v.position.usedIdx, v.num)
          : (v.position.lastAvailIdx - v.position.usedIdx) & 0xffff,
      addr: v.addr
        ? { desc: hex(v.addr.descUserAddr), avail: hex(v.addr.availUserAddr), used: hex(v.addr.usedUserAddr) }
        : undefined,
      counters: v.counters,
    })),
  };
}

/** How interrupts are sent: coalescing as configured, and where it applies. */
function interruptsOf(settings: StatusSettings): Record<string, unknown> | null {
  const c = settings.coalesce;
  if (!c) return null;
  return {
    coalesce: c.datapath === 'ts' ? 'off' : c.mode,
    usecs: c.usecs,
    frames: c.frames,
    // The TS data plane notifies once per burst; a fault plan decides its vrings' interrupts.
    appliesTo: c.datapath === 'ts' ? 'nothing (TS data path)' : 'vrings without a fault plan',
  };
}

/** The fault plan in force and what each rule injected (this plan, this session). */
export function faultsOf(backend: BackendView): Record<string, unknown> {
  // sessionMs: where a plan's atMs windows count from, so a client can place one ahead of now.
  const sessionMs = backend.sessionMs();
  return { ...backend.faults(), ...(sessionMs === undefined ? {} : { sessionMs: Math.round(sessionMs) }) };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);
}

/** What the endpoint reads (the view) and what PUT and DELETE /faults change (the fault control). */
export type HttpBackend = BackendView & { readonly faultControl: Pick<FaultControl, 'load' | 'clear'> };

/** PUT /faults loads a plan (a bad one: 400 with every problem, the plan in force kept); DELETE clears. */
function faultsRequest(backend: HttpBackend, req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'DELETE') {
    backend.faultControl.clear();
    json(res, 200, faultsOf(backend));
    return;
  }
  if (req.method !== 'PUT') {
    res.writeHead(405).end();
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size <= 1 << 20) chunks.push(c);
  });
  req.on('end', () => {
    if (size > 1 << 20) return json(res, 413, { error: 'a fault plan is at most 1 MiB' });
    let input: unknown;
    try {
      input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      return json(res, 400, { code: ErrorCode.FaultPlanInvalid, error: `not JSON: ${(err as Error).message}` });
    }
    try {
      backend.faultControl.load(input, 'PUT /faults');
      json(res, 200, faultsOf(backend));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      json(res, 400, { code: err.code, error: err.message.split(':\n')[0], issues: err.issues });
    }
  });
}

/** What is being captured and traced, and what was lost on the way. */
function observationOf(o: Observers): Record<string, unknown> {
  return {
    capture: o.capture
      ? {
          file: o.capture.currentFile,
          files: o.capture.allFiles.length,
          frames: o.capture.frames,
          lost: o.capture.dropped,
          snapLen: o.capture.snapLen,
        }
      : null,
    ringTrace: o.ringTrace ? { dropped: o.ringTrace.dropped } : null,
  };
}

const METRICS: { name: string; help: string; counter: CounterName }[] = [
  { name: 'vhost_user_net_frames_total', help: 'Frames moved by the vring', counter: 'frames' },
  {
    name: 'vhost_user_net_bytes_total',
    help: 'Frame bytes moved by the vring (virtio-net header excluded)',
    counter: 'bytes',
  },
  { name: 'vhost_user_net_kicks_total', help: 'Kicks (driver notifications) received', counter: 'kicks' },
  { name: 'vhost_user_net_ring_errors_total', help: 'Driver violations that broke the vring', counter: 'ringErrors' },
  {
    name: 'vhost_user_net_handed_over_total',
    help: 'Frames handed to another pair by steering',
    counter: 'handedOver',
  },
];
const DROPS = ['dropNoBuffers', 'dropTooBig', 'dropHostError', 'dropDisabled', 'dropMalformed'] as const;

type Labels = Record<string, string>;

/**
 * Per-vring counters summed over every session of this process: each session's counters start
 * at zero, so a `*_total` series would fall back at a reconnect. The sum is kept by the scrape:
 * a new session (a session number not seen before) folds the last values read from the old one
 * into the base. What the old session counted between the last scrape and its end is not seen.
 */
class ProcessTotals {
  private session = 0;
  private base = new Map<number, VringCounters>();
  private last = new Map<number, VringCounters>();

  read(backend: BackendView): { view: SessionView | undefined; totals: Map<number, VringCounters> } {
    const view = backend.view();
    if (backend.sessions !== this.session) {
      for (const [i, c] of this.last) this.base.set(i, sum(this.base.get(i), c));
      this.last.clear();
      this.session = backend.sessions;
    }
    for (const v of view?.vrings ?? []) this.last.set(v.index, v.counters);
    // Between sessions the last values read stay in: a total never falls back.
    const totals = new Map<number, VringCounters>();
    for (const i of new Set([...this.base.keys(), ...this.last.keys()])) {
      const last = this.last.get(i);
      const base = this.base.get(i);
      totals.set(i, last ? sum(base, last) : (base as VringCounters));
    }
    return { view, totals };
  }
}

function sum(a: VringCounters | undefined, b: VringCounters): VringCounters {
  if (!a) return { ...b };
  const out = { ...a };
  for (const k of Object.keys(b) as CounterName[]) out[k] = a[k] + b[k];
  return out;
}

/** Labels of vring `index` as /metrics names them. */
const vringLabels = (index: number): Labels => ({
  vring: String(index),
  queue: `${index % 2 === 0 ? 'receiveq' : 'transmitq'}${index >> 1}`,
});

/**
 * A prom-client registry whose metrics read the backend when scraped: `*_total` series are
 * counters, monotonic for the life of the process; states are gauges; plus prom-client's
 * default process metrics (CPU, memory, fds, event loop lag).
 */
export function metricsRegistry(backend: BackendView): Registry {
  const reg = new Registry();
  collectDefaultMetrics({ register: reg });
  const totals = new ProcessTotals();
  // One read per scrape, shared by the collectors (the first collector of a scrape reads).
  let snapshot: ReturnType<ProcessTotals['read']> | undefined;
  const each = (fn: (labels: Labels, c: VringCounters) => void) => {
    snapshot ??= totals.read(backend);
    for (const [i, c] of snapshot.totals) fn(vringLabels(i), c);
  };
  // prom-client counters only go up: each scrape adds what is new since the value it holds.
  const counter = (
    name: string,
    help: string,
    labelNames: string[],
    values: (add: (l: Labels, v: number) => void) => void,
  ) => {
    const seen = new Map<string, number>();
    new Counter({
      name,
      help,
      labelNames,
      registers: [reg],
      collect() {
        values((l, v) => {
          const key = JSON.stringify(l);
          const delta = v - (seen.get(key) ?? 0);
          if (delta >= 0) {
            this.inc(l, delta); // 0 too: the series exists from the first scrape on
            seen.set(key, v);
          }
        });
      },
    });
  };
  for (const m of METRICS) {
    counter(m.name, m.help, ['vring', 'queue'], (add) => each((l, c) => add(l, c[m.counter])));
  }
  counter('vhost_user_net_drops_total', 'Frames dropped, by reason', ['vring', 'queue', 'reason'], (add) =>
    each((l, c) => {
      for (const d of DROPS) add({ ...l, reason: d.replace(/^drop/, '').replace(/^./, (x) => x.toLowerCase()) }, c[d]);
    }),
  );
  counter(
    'vhost_user_net_notifications_total',
    'Interrupt decisions: sent, suppressed (EVENT_IDX / NO_INTERRUPT) or coalesced into another',
    ['vring', 'queue', 'result'],
    (add) =>
      each((l, c) => {
        add({ ...l, result: 'sent' }, c.notifySent);
        add({ ...l, result: 'suppressed' }, c.notifySuppressed);
        add({ ...l, result: 'coalesced' }, c.notifyCoalesced);
      }),
  );
  // A TAP's two ways to write a burst (native/write_chooser.h): rate() of the frames shows
  // which one the data path uses now, the seconds over the frames what each costs here.
  const TAP_WRITES = [
    {
      name: 'vhost_user_net_tap_write_frames_total',
      help: 'Frames a transmitq wrote to its TAP, by way: write (one system call each) or io_uring (a burst at once)',
      of: (c: VringCounters): [number, number] => [c.tapPlainFrames, c.tapUringFrames],
    },
    {
      name: 'vhost_user_net_tap_write_seconds_total',
      help: 'Time a transmitq spent handing frames to its TAP, copies included, by way',
      of: (c: VringCounters): [number, number] => [c.tapPlainNs / 1e9, c.tapUringNs / 1e9],
    },
  ];
  for (const m of TAP_WRITES)
    counter(m.name, m.help, ['vring', 'queue', 'way'], (add) =>
      each((l, c) => {
        const [write, uring] = m.of(c);
        add({ ...l, way: 'write' }, write);
        add({ ...l, way: 'io_uring' }, uring);
      }),
    );
  counter('vhost_user_net_sessions_total', 'Front-end connections served', [], (add) => add({}, backend.sessions));
  counter(
    'vhost_user_net_faults_injected_total',
    'Faults injected by the fault plan, by rule, action and vring',
    ['rule', 'do', 'vring'],
    (add) => {
      for (const t of backend.faultLog.totals.values()) add({ rule: t.rule, do: t.do, vring: String(t.vring) }, t.n);
    },
  );
  new Gauge({
    name: 'vhost_user_net_vring_started',
    help: '1 when the vring is started',
    labelNames: ['vring', 'queue'],
    registers: [reg],
    collect() {
      this.reset();
      snapshot ??= totals.read(backend);
      for (const v of snapshot.view?.vrings ?? []) this.set(vringLabels(v.index), v.started ? 1 : 0);
    },
  });
  new Gauge({
    name: 'vhost_user_net_connected',
    help: '1 while a front-end is connected',
    registers: [reg],
    collect() {
      snapshot ??= totals.read(backend);
      this.set(snapshot.view ? 1 : 0);
    },
  });
  const metrics = reg.metrics.bind(reg);
  reg.metrics = async () => {
    snapshot = undefined;
    try {
      return await metrics();
    } finally {
      snapshot = undefined;
    }
  };
  return reg;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Starts the endpoint; resolves with the server and the port it listens on. */
export async function startHttp(
  backend: HttpBackend,
  host: string,
  port: number,
  observe: Observers = {},
  settings: StatusSettings = {},
): Promise<{ server: Server; port: number }> {
  const reg = metricsRegistry(backend);
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/faults' && req.method !== 'GET') {
      faultsRequest(backend, req, res);
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (url === '/faults') {
      json(res, 200, faultsOf(backend));
    } else if (url === '/healthz') {
      // Alive and serving: the process answers; `connected` says whether a front-end is there.
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(`${JSON.stringify({ ok: true, connected: backend.view() !== undefined, sessions: backend.sessions })}\n`);
    } else if (url === '/status') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(`${JSON.stringify(statusOf(backend, observe, settings), null, 2)}\n`);
    } else if (url === '/ring-events') {
      // The ring trace's recent events, narrated, after a seq: the ring page's player.
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      const history = observe.ringTrace?.history;
      const after = Number(q.get('after') ?? 0) || 0;
      const max = Math.min(5000, Math.max(1, Number(q.get('max') ?? 2000) || 2000));
      json(res, 200, history ? { on: true, ...history.since(after, max) } : { on: false, oldest: 0, events: [] });
    } else if (url === '/rings') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(ringsOf(backend)));
    } else if (url === '/rings.html' || url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(RING_PAGE);
    } else if (url === '/metrics') {
      reg.metrics().then(
        (text) => res.writeHead(200, { 'content-type': reg.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else {
      res
        .writeHead(404, { 'content-type': 'text/plain' })
        .end('try /status, /metrics, /healthz, /rings, /ring-events or /rings.html\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
