/**
 * SIGHUP while serving: the log level, steering and the fault plan change without dropping the session;
 * a change to anything else refuses the reload and names the option; a bad plan changes
 * nothing. The real CLI with a config file, a front-end connected throughout.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';
import { Proc } from '../src/util/proc.js';
import { changedOptions } from '../src/cli/reload.js';
import { parseConfig } from '../src/config/config.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { type DriverPair, MockFrontend, transmit } from './helpers/mock-frontend.js';
import { featureMask, VirtioFeature as F } from '../src/features.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('reload', () => {
  it('names the options that differ', () => {
    const a = parseConfig({ socket: { path: '/tmp/a' }, queues: 1 }, 'a');
    const b = parseConfig({ socket: { path: '/tmp/a' }, queues: 2, log: { level: 'debug' } }, 'b');
    expect(changedOptions(a, b).sort()).toEqual(['log.level', 'queues']);
  });

  it('SIGHUP applies the log level, steering and the fault plan, refuses the rest, keeps the session', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    const file = join(tmp.dir, 'config.json');
    const plan = (name: string) => ({ seed: 1, rules: [{ name, on: 'transmitq0', do: 'drop', every: 3 }] });
    const write = (o: Record<string, unknown>) =>
      writeFileSync(file, JSON.stringify({ socket: { path: sock }, backend: 'null', ...o }));
    write({ faults: plan('first') });
    const { b, fe } = await serveConfig(file, sock);
    const hup = (want: RegExp) => sighup(b, want);

    let out = await hup(/configuration reloaded/);
    expect(out).toMatch(/"changed":\[\]/);
    write({ faults: plan('second'), log: { level: 'debug' } });
    out = await hup(/configuration reloaded/);
    expect(out).toMatch(/"changed":\["log.level","faults"\]/);
    expect(out).toMatch(/"rules":1,"seed":1,"msg":"fault plan loaded"/);
    // debug is on now: each request is logged.
    await fe.u64('GET_FEATURES');
    await waitFor(() => /"request":"GET_FEATURES"/.test(b.output), 3000, 'a debug line');

    // Steering (policy, key, table) changes on the running session (test/datapath.test.ts shows
    // the frames move with it).
    write({ faults: plan('second'), log: { level: 'debug' }, steering: { policy: 'none' } });
    out = await hup(/configuration reloaded/);
    expect(out).toMatch(/"changed":\["steering"\]/);
    expect(out).toMatch(/"policy":"none".*"msg":"steering set"/);
    write({ faults: plan('second'), log: { level: 'debug' }, steering: { policy: 'none', table: [3] } });
    out = await hup(/reload refused/);
    expect(out).toMatch(/steering.table: queue pair 3 does not exist/);

    write({ faults: plan('second'), log: { level: 'debug' }, steering: { policy: 'none' }, queues: 2 });
    out = await hup(/reload refused/);
    expect(out).toMatch(/queues cannot change while serving/);
    write({
      faults: { seed: 1, rules: [{ name: 'x', on: 'transmitq0', do: 'melt' }] },
      log: { level: 'debug' },
      steering: { policy: 'none' },
    });
    out = await hup(/reload refused/);
    expect(out).toMatch(/VUN_FAULT_PLAN_INVALID/);

    // The session was never dropped: the front-end is still served.
    expect(fe.isPeerClosed).toBe(false);
    expect(await fe.u64('GET_QUEUE_NUM')).toBe(1n);
    expect(b.output).not.toMatch(/session closed/);
  });

  it('SIGHUP moves the capture and the traces to new files; a file that cannot be opened changes nothing', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    const file = join(tmp.dir, 'config.json');
    const at = (name: string) => join(tmp.dir, name);
    const write = (o: { pcap?: string; rings?: string; messages?: string }) =>
      writeFileSync(
        file,
        JSON.stringify({
          socket: { path: sock },
          backend: 'null',
          ...(o.pcap ? { pcap: { file: o.pcap } } : {}),
          trace: { ...(o.rings ? { rings: o.rings } : {}), ...(o.messages ? { messages: o.messages } : {}) },
        }),
      );
    write({ pcap: at('a.pcapng'), rings: at('a-rings.jsonl'), messages: at('a-msgs.jsonl') });
    const { b, fe } = await serveConfig(file, sock);
    const { ram, pairs } = await fe.bringUp(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES), 1);
    const p = pairs[0] as DriverPair;
    const frame = Buffer.alloc(60, 7);
    let base = 0x200000;
    const send = (n: number) => {
      transmit(native, ram, p, Array(n).fill(frame), { base });
      base += n * 0x1000;
    };
    const hup = (want: RegExp) => sighup(b, want);
    const lines = (f: string, re: RegExp) =>
      existsSync(f)
        ? readFileSync(f, 'utf8')
            .split('\n')
            .filter((l) => re.test(l)).length
        : -1;
    send(3);
    await waitFor(() => packets(at('a.pcapng')) === 3, 5000, '3 frames in a.pcapng');
    await waitFor(() => lines(at('a-rings.jsonl'), /"ev":"flush"/) > 0, 5000, 'ring steps in a-rings');
    expect(lines(at('a-msgs.jsonl'), /GET_QUEUE_NUM/)).toBeGreaterThan(0);

    write({ pcap: at('b.pcapng'), rings: at('b-rings.jsonl'), messages: at('b-msgs.jsonl') });
    expect(await hup(/configuration reloaded/)).toMatch(/"changed":\["trace","pcap"\]/);
    const ringsInA = lines(at('a-rings.jsonl'), /./);
    send(2);
    await fe.u64('GET_QUEUE_NUM');
    await waitFor(() => packets(at('b.pcapng')) === 2, 5000, '2 frames in b.pcapng');
    await waitFor(() => lines(at('b-rings.jsonl'), /"ev":"flush"/) > 0, 5000, 'ring steps in b-rings');
    await waitFor(
      () => lines(at('b-msgs.jsonl'), /"kind":"request".*"request":"GET_QUEUE_NUM"/) === 1,
      5000,
      'the request in b-msgs',
    );
    expect(packets(at('a.pcapng'))).toBe(3);
    expect(lines(at('a-rings.jsonl'), /./)).toBe(ringsInA);
    // The handshake's request only: the old trace got nothing after the reload.
    expect(lines(at('a-msgs.jsonl'), /"kind":"request".*"request":"GET_QUEUE_NUM"/)).toBe(1);

    write({ pcap: at('no-such-dir/c.pcapng'), rings: at('b-rings.jsonl'), messages: at('b-msgs.jsonl') });
    expect(await hup(/reload refused/)).toMatch(/nothing changed/);
    send(1);
    await waitFor(() => packets(at('b.pcapng')) === 3, 5000, 'still capturing into b.pcapng');
    // pcap and traces removed: all off.
    write({});
    expect(await hup(/configuration reloaded/)).toMatch(/"changed":\["trace","pcap"\]/);
    const ringsInB = lines(at('b-rings.jsonl'), /./);
    send(2);
    await waitFor(() => p.transmitq.usedIdx() === 8, 5000, 'frames sent after capture off');
    await new Promise((r) => setTimeout(r, 200));
    expect(packets(at('b.pcapng'))).toBe(3);
    expect(lines(at('b-rings.jsonl'), /./)).toBe(ringsInB);
    expect(fe.isPeerClosed).toBe(false);
  });
});

/** The real CLI on `file`, listening on `sock`, and a front-end that negotiated with it. */
async function serveConfig(file: string, sock: string): Promise<{ b: Proc; fe: MockFrontend }> {
  const b = new Proc(process.execPath, [join(packageRoot, 'bin', 'vhost-user-net.js'), '--config', file]);
  cleanups.push(() => b.stop());
  await waitFor(() => /"listening"/.test(b.output), 10_000, 'listening');
  const fe = MockFrontend.connect(native, sock);
  cleanups.push(() => fe.close());
  await fe.handshake();
  return { b, fe };
}

/** SIGHUP, then the log lines up to the one matching `want`. */
async function sighup(b: Proc, want: RegExp): Promise<string> {
  const from = b.output.length;
  process.kill(b.pid, 'SIGHUP');
  await waitFor(() => want.test(b.output.slice(from)), 5000, String(want));
  return b.output.slice(from);
}

/**
 * Frames in a pcapng file: Enhanced Packet Blocks (type 6) on the vrings' Ethernet interfaces
 * (ids 0 and 1; the -vnet copies and the vhost-user messages come after), walking the blocks by
 * their lengths.
 */
function packets(path: string): number {
  if (!existsSync(path)) return -1;
  const f = readFileSync(path);
  let n = 0;
  for (let at = 0; at + 8 <= f.length;) {
    const type = f.readUInt32LE(at);
    const len = f.readUInt32LE(at + 4);
    if (len < 12 || at + len > f.length) break;
    if (type === 6 && f.readUInt32LE(at + 8) < 2) n++;
    at += len;
  }
  return n;
}
