/**
 * Live introspection over HTTP (off by default; loopback only unless allowed): `/status` as
 * JSON (features by name, memory regions, every vring's state and counters) and `/metrics` as
 * Prometheus text (prom-client), `/rings` (every ring read from guest memory) and the page that
 * draws them live (`/rings.html`), all read at request time: nothing is collected on the data
 * path.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Gauge, Registry } from 'prom-client';
import type { VhostUserNetBackend } from '../backend.js';
import { featureNames, hex, ProtocolFeature, VirtioFeature } from '../features.js';
import { COUNTER_NAMES, type DeviceCounters } from '../net/counters.js';
import { statusNames } from '../trace/decode.js';
import type { Observers } from '../trace/observe.js';
import { RING_PAGE } from './ring-page.js';
import { ringsOf } from './rings.js';

/** The /status document. */
export function statusOf(backend: VhostUserNetBackend, observe: Observers = {}): Record<string, unknown> {
  const s = backend.session;
  const observation = observationOf(observe);
  if (!s) return { connected: false, sessions: backend.sessions, observation };
  const acked = s.ackedFeatures ?? 0n;
  return {
    connected: true,
    observation,
    session: backend.sessions,
    queuePairs: s.options.queuePairs,
    features: { offered: hex(s.options.features), acked: hex(acked), names: featureNames(acked, VirtioFeature) },
    protocolFeatures: {
      acked: hex(s.ackedProtocolFeatures),
      names: featureNames(s.ackedProtocolFeatures, ProtocolFeature),
    },
    status: { value: hex(s.status), bits: statusNames(s.status) },
    mtu: s.mtu,
    lint: Object.fromEntries(s.lint),
    memory: s.memory.regions.map((r) => ({
      guestAddr: hex(r.guestAddr),
      size: hex(r.size),
      userAddr: hex(r.userAddr),
      refs: r.refs,
    })),
    vrings: s.vrings.map((v) => {
      const c = s.dataPlane.counters.vring(v.index);
      return {
        index: v.index,
        queue: `${v.index % 2 === 0 ? 'receiveq' : 'transmitq'}${v.index >> 1}`,
        size: v.num,
        started: v.started,
        enabled: s.isEnabled(v),
        broken: v.broken,
        // While a ring runs the data plane owns its position: the counters carry it.
        lastAvailIdx: v.started ? c.lastAvailIdx : v.lastAvailIdx,
        usedIdx: c.usedIdx,
        inFlight: v.started ? (c.lastAvailIdx - c.usedIdx) & 0xffff : 0,
        addr: v.addr
          ? { desc: hex(v.addr.descUserAddr), avail: hex(v.addr.availUserAddr), used: hex(v.addr.usedUserAddr) }
          : undefined,
        counters: c,
      };
    }),
  };
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

const METRICS: {
  name: string;
  help: string;
  counter: (typeof COUNTER_NAMES)[number];
  labels?: Record<string, string>;
}[] = [
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

/** A prom-client registry whose metrics read the backend's counters when scraped. */
export function metricsRegistry(backend: VhostUserNetBackend): Registry {
  const reg = new Registry();
  const each = (fn: (labels: Record<string, string>, c: DeviceCounters, i: number) => void) => {
    const s = backend.session;
    if (!s) return;
    s.vrings.forEach((v) =>
      fn(
        { vring: String(v.index), queue: `${v.index % 2 === 0 ? 'receiveq' : 'transmitq'}${v.index >> 1}` },
        s.dataPlane.counters,
        v.index,
      ),
    );
  };
  for (const m of METRICS) {
    new Gauge({
      name: m.name,
      help: m.help,
      labelNames: ['vring', 'queue'],
      registers: [reg],
      collect() {
        this.reset();
        each((labels, c, i) => this.set(labels, c.vring(i)[m.counter]));
      },
    });
  }
  new Gauge({
    name: 'vhost_user_net_drops_total',
    help: 'Frames dropped, by reason',
    labelNames: ['vring', 'queue', 'reason'],
    registers: [reg],
    collect() {
      this.reset();
      each((labels, c, i) => {
        const v = c.vring(i);
        for (const d of DROPS)
          this.set({ ...labels, reason: d.replace(/^drop/, '').replace(/^./, (x) => x.toLowerCase()) }, v[d]);
      });
    },
  });
  new Gauge({
    name: 'vhost_user_net_notifications_total',
    help: 'Interrupt decisions: sent or suppressed (EVENT_IDX / NO_INTERRUPT)',
    labelNames: ['vring', 'queue', 'result'],
    registers: [reg],
    collect() {
      this.reset();
      each((labels, c, i) => {
        const v = c.vring(i);
        this.set({ ...labels, result: 'sent' }, v.notifySent);
        this.set({ ...labels, result: 'suppressed' }, v.notifySuppressed);
      });
    },
  });
  new Gauge({
    name: 'vhost_user_net_vring_started',
    help: '1 when the vring is started',
    labelNames: ['vring', 'queue'],
    registers: [reg],
    collect() {
      this.reset();
      const s = backend.session;
      each((labels, _c, i) => this.set(labels, s?.vrings[i]?.started ? 1 : 0));
    },
  });
  new Gauge({
    name: 'vhost_user_net_sessions_total',
    help: 'Front-end connections served',
    registers: [reg],
    collect() {
      this.set(backend.sessions);
    },
  });
  return reg;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Starts the endpoint; resolves with the server and the port it listens on. */
export async function startHttp(
  backend: VhostUserNetBackend,
  host: string,
  port: number,
  observe: Observers = {},
): Promise<{ server: Server; port: number }> {
  const reg = metricsRegistry(backend);
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (url === '/status') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(`${JSON.stringify(statusOf(backend, observe), null, 2)}\n`);
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
      res.writeHead(404, { 'content-type': 'text/plain' }).end('try /status, /metrics, /rings or /rings.html\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
