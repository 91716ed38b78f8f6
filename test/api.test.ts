/**
 * The programmatic API (src/api.ts) without a guest: a front-end connects over the socket the
 * API created; the session and fault events arrive; a bad plan throws and leaves the plan in
 * force; counters and the session's age are readable; stop ends the session.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type Backend, ConfigError, type FaultLine, type SessionEnd, startBackend } from '../src/api.js';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { type DriverPair, MockFrontend, transmit } from './helpers/mock-frontend.js';

let backend: Backend | undefined;
let fe: MockFrontend | undefined;
const tmp = tempDir();
afterEach(async () => {
  fe?.close();
  await backend?.stop();
  backend = fe = undefined;
});

describe('startBackend', () => {
  it('serves a front-end, reports sessions and faults, swaps plans, stops', async () => {
    const socket = join(tmp.dir, 'api.sock');
    backend = await startBackend({
      socket,
      host: 'loopback',
      faults: { seed: 1, rules: [{ name: 'lose', on: 'transmitq0', do: 'drop', every: 2 }] },
    });
    const sessions: number[] = [];
    const ended: SessionEnd[] = [];
    const faults: FaultLine[] = [];
    backend.on('session', (s) => sessions.push(s.id));
    backend.on('sessionClosed', (s) => ended.push(s));
    backend.on('fault', (f) => faults.push(f));
    expect(backend.sessionMs()).toBeUndefined();

    fe = MockFrontend.connect(native, socket);
    await fe.handshake();
    const { ram, pairs } = await fe.bringUp(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES), 1);
    const pair = pairs[0] as DriverPair;
    expect(sessions).toEqual([1]);
    expect(backend.sessionMs()).toBeGreaterThan(0);
    transmit(native, ram, pair, Array(4).fill(Buffer.alloc(60, 1)));
    await waitFor(() => faults.length === 2, 3000, 'two drops');
    expect(faults.map((f) => [f.rule, f.do, f.event])).toEqual([
      ['lose', 'drop', 1],
      ['lose', 'drop', 3],
    ]);
    expect(backend.counters().find((c) => c.queue === 'transmitq0')?.frames).toBe(2);

    // A bad plan throws with every problem; the plan in force stays.
    expect(() => backend?.loadFaults({ seed: 1, rules: [{ name: 'x', on: 'transmitq0', do: 'melt' }] })).toThrow(
      ConfigError,
    );
    expect(backend.faults()).toMatchObject({ plan: { seed: 1 }, rules: [{ rule: 'lose', injected: 2 }] });
    backend.clearFaults();
    expect(backend.faults()).toEqual({ plan: null, rules: [] });

    fe.close();
    fe = undefined;
    await waitFor(() => ended.length === 1, 3000, 'session end reported');
    expect(ended[0]).toEqual({ id: 1 });
  });

  it('refuses a bad plan at start, before it listens', async () => {
    const socket = join(tmp.dir, 'bad.sock');
    await expect(
      startBackend({ socket, faults: { seed: 1, rules: [{ name: 'x', on: 'receiveq7', do: 'drop' }] } }),
    ).rejects.toThrow(/receiveq7 does not exist/);
  });
});
