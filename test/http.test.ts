/**
 * Live introspection: /status and /metrics of a backend carrying frames for the mock
 * front-end (loopback backend); the Prometheus text parses and its counters equal ours; the
 * `status` command prints the same state.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCommandLine } from '../src/cli/main.js';
import { ConfigError } from '../src/errors.js';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { startHttp } from '../src/metrics/http.js';
import { formatStatus } from '../src/metrics/status-text.js';
import { packageRoot } from '../src/native.js';
import { bringUpDevice, native, serve, waitFor } from './helpers/harness.js';
import { type DriverPair, transmit } from './helpers/mock-frontend.js';

/** Prometheus text exposition: `name{a="b",...} value` lines (comments skipped). */
function parseProm(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (-?[0-9.]+(?:e[-+]?[0-9]+)?|NaN|[+-]Inf)$/i.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    for (const kv of (m[2] ?? '').split(',').filter(Boolean)) {
      const [k, v] = kv.split('=');
      labels[k as string] = JSON.parse(v as string) as string;
    }
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

describe('http introspection', () => {
  it('/status and /metrics describe a session that moves frames, and agree with the counters', async () => {
    const srv = serve({ queuePairs: 1 }, { kind: 'loopback' });
    const { server, port } = await startHttp(srv.backend, '127.0.0.1', 0);
    const { fe, session, ram, pairs } = await bringUpDevice(
      srv,
      featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES),
    );
    const { receiveq, kicks } = pairs[0] as DriverPair;
    for (let i = 0; i < 8; i++)
      receiveq.offer(receiveq.addChain([{ addr: BigInt(0x100000 + i * 2048), len: 2048, write: true }]));
    receiveq.publish();
    native.eventfdWrite(kicks.receiveq, 1n);
    await waitFor(() => session.vrings[0]?.started === true);
    transmit(native, ram, pairs[0] as DriverPair, Array(3).fill(Buffer.alloc(100, 0xee)));
    await waitFor(() => receiveq.usedIdx() === 3, 5000, 'frames looped back');

    const st = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as {
      connected: boolean;
      features: { names: string[] };
      memory: unknown[];
      vrings: {
        index: number;
        size: number;
        started: boolean;
        enabled: boolean;
        usedIdx: number;
        counters: { frames: number };
      }[];
    };
    expect(st.connected).toBe(true);
    expect(st.features.names).toEqual(['VHOST_USER_F_PROTOCOL_FEATURES', 'F_VERSION_1']);
    expect(st.memory).toHaveLength(1);
    expect(st.vrings[0]).toMatchObject({
      index: 0,
      size: 256,
      started: true,
      enabled: true,
      usedIdx: 3,
      counters: { frames: 3 },
    });
    expect(st.vrings[1]).toMatchObject({ index: 1, started: true, counters: { frames: 3 } });

    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const samples = parseProm(await res.text());
    const counters = { vring: (i: number) => session.counters(i) };
    const get = (name: string, labels: Record<string, string>) =>
      samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    for (const v of [0, 1]) {
      const c = counters.vring(v);
      expect(get('vhost_user_net_frames_total', { vring: String(v) })).toBe(c.frames);
      expect(get('vhost_user_net_bytes_total', { vring: String(v) })).toBe(c.bytes);
      expect(get('vhost_user_net_kicks_total', { vring: String(v) })).toBe(c.kicks);
      expect(get('vhost_user_net_notifications_total', { vring: String(v), result: 'sent' })).toBe(c.notifySent);
      expect(get('vhost_user_net_drops_total', { vring: String(v), reason: 'noBuffers' })).toBe(c.dropNoBuffers);
      // A TAP's two write ways (none here: the loopback port writes to no TAP).
      expect(get('vhost_user_net_tap_write_frames_total', { vring: String(v), way: 'write' })).toBe(c.tapPlainFrames);
      expect(get('vhost_user_net_tap_write_frames_total', { vring: String(v), way: 'io_uring' })).toBe(
        c.tapUringFrames,
      );
      expect(get('vhost_user_net_tap_write_seconds_total', { vring: String(v), way: 'io_uring' })).toBe(
        c.tapUringNs / 1e9,
      );
    }
    expect(get('vhost_user_net_frames_total', { vring: '0', queue: 'receiveq0' })).toBe(3);
    expect(get('vhost_user_net_bytes_total', { vring: '1', queue: 'transmitq0' })).toBe(300);
    expect(get('vhost_user_net_sessions_total', {})).toBe(1);

    // The status command prints the same state (run as a child: this process serves it).
    const child = spawn(process.execPath, [
      join(packageRoot, 'bin', 'vhost-user-net.js'),
      'status',
      '--http',
      `127.0.0.1:${port}`,
    ]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    expect(await new Promise((r) => child.once('exit', r))).toBe(0);
    expect(out).toMatch(/features 0x140000000: VHOST_USER_F_PROTOCOL_FEATURES F_VERSION_1/);
    expect(out).toMatch(/\n\s+0 receiveq0\s+256 started enabled\s+3\s+3\s+3\s/);

    expect((await fetch(`http://127.0.0.1:${port}/nope`)).status).toBe(404);
    server.close();
    const closed = srv.sessionClosed();
    fe.close();
    await closed;
    srv.stop();
  });

  it('/healthz answers, and *_total counters never fall back across reconnects', async () => {
    const srv = serve({ queuePairs: 1 }, { kind: 'loopback' });
    const { server, port } = await startHttp(srv.backend, '127.0.0.1', 0);
    const health = async () =>
      (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as Record<string, unknown>;
    expect(await health()).toEqual({ ok: true, connected: false, sessions: 0 });
    const frames = async () => {
      const samples = parseProm(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
      expect(samples.some((s) => s.name === 'process_cpu_seconds_total')).toBe(true); // default metrics
      return samples.find((s) => s.name === 'vhost_user_net_frames_total' && s.labels.vring === '1')?.value;
    };
    // Two sessions, each sending 2 frames: the counter reads 2, then 4 (never 2 again).
    const seen: (number | undefined)[] = [];
    for (let round = 0; round < 2; round++) {
      const { fe, session, ram, pairs } = await bringUpDevice(
        srv,
        featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES),
      );
      expect(await health()).toMatchObject({ ok: true, connected: true, sessions: round + 1 });
      transmit(native, ram, pairs[0] as DriverPair, Array(2).fill(Buffer.alloc(60, 1)));
      await waitFor(() => session.counters(1).frames === 2, 5000, 'frames sent');
      seen.push(await frames());
      const closed = srv.sessionClosed();
      fe.close();
      await closed;
      seen.push(await frames());
    }
    expect(seen).toEqual([2, 2, 4, 4]);
    server.close();
    srv.stop();
  });

  it('serves loopback only unless remote access is configured', () => {
    expect(() => parseCommandLine(['--socket', '/tmp/x', '--http', '0.0.0.0:9180'])).toThrow(ConfigError);
    const r = parseCommandLine(['--socket', '/tmp/x', '--http', '127.0.0.1:9180']);
    expect(r.action === 'serve' && r.config.http?.listen).toBe('127.0.0.1:9180');
  });
});

describe('/faults', () => {
  it('PUT loads a plan, GET reads it back with counts, a bad plan is refused (400) and the plan in force stays, DELETE clears', async () => {
    const srv = serve({ queuePairs: 1 }, { kind: 'loopback' });
    const { server, port } = await startHttp(srv.backend, '127.0.0.1', 0);
    const url = `http://127.0.0.1:${port}/faults`;
    const put = (body: string) => fetch(url, { method: 'PUT', body });
    const good = { seed: 5, rules: [{ name: 'lose', on: 'transmitq0', do: 'drop', every: 2 }] };
    let r = await put(JSON.stringify(good));
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ plan: good, rules: [{ rule: 'lose', injected: 0 }] });
    r = await put(JSON.stringify({ seed: 5, rules: [{ name: 'x', on: 'receiveq4', do: 'explode' }] }));
    expect(r.status).toBe(400);
    const bad = (await r.json()) as { code: string; issues: string[] };
    expect(bad.code).toBe('VUN_FAULT_PLAN_INVALID');
    expect(bad.issues.join('\n')).toMatch(/rules.0.do: /);
    expect((await put('{not json')).status).toBe(400);
    // The plan in force is still the good one, and it acts: every 2nd transmitted frame is lost.
    expect(((await (await fetch(url)).json()) as { plan: unknown }).plan).toEqual(good);
    const { fe, session, ram, pairs } = await bringUpDevice(
      srv,
      featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES),
    );
    transmit(native, ram, pairs[0] as DriverPair, Array(4).fill(Buffer.alloc(60, 2)));
    await waitFor(() => (pairs[0] as DriverPair).transmitq.usedIdx() === 4, 5000, 'chains used');
    await waitFor(() => srv.backend.faultLog.perRule()[0]?.injected === 2, 2000, 'two drops counted');
    expect(session.counters(1).frames).toBe(2);
    const status = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { faults: unknown };
    expect(status.faults).toMatchObject({ rules: [{ rule: 'lose', do: 'drop', injected: 2 }] });
    // `vhost-user-net status` prints the same per rule.
    expect(formatStatus(status as Record<string, unknown>).slice(-2)).toEqual([
      'fault plan (seed 5): rule, action, where, injected',
      `  ${'lose'.padEnd(20)} ${'drop'.padEnd(13)} ${'transmitq0'.padEnd(11)} 2`,
    ]);
    // With a session, GET tells its age: a client places an atMs window ahead of it.
    const age = ((await (await fetch(url)).json()) as { sessionMs: number }).sessionMs;
    expect(age).toBeGreaterThan(0);
    expect(age).toBeLessThan(60_000);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/vhost_user_net_faults_injected_total\{rule="lose",do="drop",vring="1"\} 2/);
    r = await fetch(url, { method: 'DELETE' });
    expect(await r.json()).toMatchObject({ plan: null, rules: [] });
    server.close();
    const closed = srv.sessionClosed();
    fe.close();
    await closed;
    srv.stop();
  });
});
