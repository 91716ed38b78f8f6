/**
 * SIGHUP while serving: the log level and the fault plan change without dropping the session;
 * a change to anything else refuses the reload and names the option; a bad plan changes
 * nothing. The real CLI with a config file, a front-end connected throughout.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';
import { Proc } from '../src/util/proc.js';
import { changedOptions } from '../src/cli/reload.js';
import { parseConfig } from '../src/config/config.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

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

  it('SIGHUP applies the log level and the fault plan, refuses the rest, keeps the session', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    const file = join(tmp.dir, 'config.json');
    const plan = (name: string) => ({ seed: 1, rules: [{ name, on: 'transmitq0', do: 'drop', every: 3 }] });
    const write = (o: Record<string, unknown>) =>
      writeFileSync(file, JSON.stringify({ socket: { path: sock }, backend: 'null', ...o }));
    write({ faults: plan('first') });
    const b = new Proc(process.execPath, [join(packageRoot, 'bin', 'vhost-user-net.js'), '--config', file]);
    cleanups.push(() => b.stop());
    await waitFor(() => /"listening"/.test(b.output), 10_000, 'listening');
    const fe = MockFrontend.connect(native, sock);
    cleanups.push(() => fe.close());
    await fe.handshake();
    const hup = async (want: RegExp) => {
      const from = b.output.length;
      process.kill(b.pid, 'SIGHUP');
      await waitFor(() => want.test(b.output.slice(from)), 5000, String(want));
      return b.output.slice(from);
    };

    let out = await hup(/configuration reloaded/);
    expect(out).toMatch(/"changed":\[\]/);
    write({ faults: plan('second'), log: { level: 'debug' } });
    out = await hup(/configuration reloaded/);
    expect(out).toMatch(/"changed":\["log.level","faults"\]/);
    expect(out).toMatch(/"rules":1,"seed":1,"msg":"fault plan loaded"/);
    // debug is on now: each request is logged.
    await fe.u64('GET_FEATURES');
    await waitFor(() => /"request":"GET_FEATURES"/.test(b.output), 3000, 'a debug line');

    write({ faults: plan('second'), log: { level: 'debug' }, queues: 2 });
    out = await hup(/reload refused/);
    expect(out).toMatch(/queues cannot change while serving/);
    write({ faults: { seed: 1, rules: [{ name: 'x', on: 'transmitq0', do: 'melt' }] }, log: { level: 'debug' } });
    out = await hup(/reload refused/);
    expect(out).toMatch(/VUN_FAULT_PLAN_INVALID/);

    // The session was never dropped: the front-end is still served.
    expect(fe.isPeerClosed).toBe(false);
    expect(await fe.u64('GET_QUEUE_NUM')).toBe(1n);
    expect(b.output).not.toMatch(/session closed/);
  });
});
