/**
 * Interrupt coalescing (native/coalesce.h): its decisions against a table worked out by hand,
 * its two promises under random sequences (never an interrupt the ring did not ask for, never
 * one held longer than `usecs`), and a device that holds and then sends a receiveq's interrupt.
 */
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import type { CoalesceConfig } from '../src/net/coalesce.js';
import { statusOf } from '../src/metrics/http.js';
import { formatStatus } from '../src/metrics/status-text.js';
import { RingTrace } from '../src/trace/ring-trace.js';
import { bringUpDevice, native, type Served, serve, shutdown, waitFor } from './helpers/harness.js';
import type { MockFrontend } from './helpers/mock-frontend.js';

const OFF = 0;
const STATIC = 1;
const ADAPTIVE = 2;
type Step = [number, number, number?, boolean?];
const flush = (us: number, frames: number, asked: boolean): Step => [0, us, frames, asked];
const timer = (us: number): Step => [1, us];
const stop = (us: number): Step => [2, us];

describe('coalescing decisions (known answers)', () => {
  it('adaptive: at once when idle, held until usecs after the last one when busy, early at the frame limit', () => {
    const steps: [Step, string][] = [
      [flush(0, 1, true), 'send 1'], // idle (nothing sent yet): no wait
      [flush(10, 2, true), 'hold'], // 10 us after the last: held until 50
      [flush(20, 3, true), 'join'],
      [flush(25, 4, false), 'wait'], // the ring did not ask; these ride on the held one
      [timer(49), '-'],
      [timer(50), 'send 9'],
      [flush(60, 5, false), 'none'], // nothing asked, nothing held
      [flush(200, 1, true), 'send 1'], // idle again
      [flush(210, 70, true), 'send 70'], // 70 >= 64 frames: no hold
      [stop(211), '-'],
    ];
    const got = native.coalesceRun(
      { mode: ADAPTIVE, usecs: 50, frames: 64 },
      steps.map(([s]) => s),
    );
    expect(got).toEqual(steps.map(([, a]) => a));
  });

  it('static: every interrupt held up to usecs; frames 0 sets no limit; a stop sends what is held', () => {
    const steps: [Step, string][] = [
      [flush(0, 1, true), 'hold'],
      [flush(50, 1000, true), 'join'],
      [timer(99), '-'],
      [timer(100), 'send 1001'],
      [flush(101, 1, true), 'hold'],
      [stop(102), 'send 1'],
      [timer(300), '-'],
    ];
    const got = native.coalesceRun(
      { mode: STATIC, usecs: 100, frames: 0 },
      steps.map(([s]) => s),
    );
    expect(got).toEqual(steps.map(([, a]) => a));
  });

  it('off: each interrupt the ring asks for, at once; none it does not', () => {
    const got = native.coalesceRun({ mode: OFF, usecs: 50, frames: 64 }, [
      flush(0, 1, true),
      flush(1, 1, true),
      flush(2, 1, false),
    ]);
    expect(got).toEqual(['send 1', 'send 1', 'none']);
  });
});

describe('coalescing promises (random sequences)', () => {
  it('never sends more interrupts than the ring asked for, and never holds one past usecs', () => {
    const step = fc.record({
      gap: fc.integer({ min: 0, max: 120 }),
      op: fc.constantFrom(0, 0, 0, 1, 2),
      frames: fc.integer({ min: 1, max: 40 }),
      asked: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.constantFrom(STATIC, ADAPTIVE),
        fc.integer({ min: 0, max: 100 }),
        fc.constantFrom(0, 16, 64),
        fc.array(step, { maxLength: 60 }),
        (mode, usecs, frames, raw) => {
          let t = 0;
          const steps: Step[] = raw.map((s) => {
            t += s.gap;
            return s.op === 0 ? flush(t, s.frames, s.asked) : s.op === 1 ? timer(t) : stop(t);
          });
          const got = native.coalesceRun({ mode, usecs, frames }, steps);
          let asks = 0;
          let sends = 0;
          let heldSince: number | undefined;
          steps.forEach((s, k) => {
            const r = got[k] as string;
            if (s[0] === 0 && s[3]) asks++;
            if (r.startsWith('send')) {
              sends++;
              heldSince = undefined;
            }
            if (r === 'hold') heldSince = s[1];
            // A timer at or after the deadline sends what is held.
            if (s[0] === 1 && heldSince !== undefined)
              expect(s[1] < heldSince + usecs || r.startsWith('send')).toBe(true);
            expect(sends).toBeLessThanOrEqual(asks);
          });
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('a device that coalesces (native data path, loopback)', () => {
  let srv: Served | undefined;
  let fe: MockFrontend | undefined;
  afterEach(async () => {
    await shutdown(srv, fe);
    srv = fe = undefined;
  });

  let traced = '';
  async function loopback(coalesce: CoalesceConfig) {
    const sink = new PassThrough();
    traced = '';
    sink.on('data', (d: Buffer) => (traced += d.toString()));
    const observe = { ringTrace: new RingTrace(sink) };
    srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, 'native', undefined, undefined, observe, { coalesce });
    const d = await bringUpDevice(srv, featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES));
    fe = d.fe;
    const p = d.pairs[0]!;
    for (let i = 0; i < 16; i++)
      p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(0x100000 + i * 2048), len: 2048, write: true }]));
    p.receiveq.publish();
    native.eventfdWrite(p.kicks.receiveq, 1n);
    await waitFor(() => d.session.vrings[0]?.started === true, 2000, 'receiveq started');
    const send = (i: number) => {
      const at = 0x200000 + i * 2048;
      d.ram.bytes.fill(0, at, at + 12);
      d.ram.bytes.fill(0xab, at + 12, at + 12 + 60);
      p.transmitq.offer(p.transmitq.addChain([{ addr: BigInt(at), len: 72, write: false }]));
      p.transmitq.publish();
      native.eventfdWrite(p.kicks.transmitq, 1n);
    };
    return { ...d, p, send };
  }

  it('adaptive: the first frame interrupts at once, the next ones share one interrupt usecs later', async () => {
    const { session, p, send } = await loopback({ mode: 'adaptive', usecs: 300_000, frames: 0 });
    send(0);
    await waitFor(() => p.receiveq.usedIdx() === 1, 2000, 'frame 1 used');
    await waitFor(() => native.eventfdRead(p.calls.receiveq) !== null, 2000, 'its interrupt');
    const t0 = Date.now();
    for (let i = 1; i < 4; i++) {
      send(i);
      await waitFor(() => p.receiveq.usedIdx() === i + 1, 2000, `frame ${i + 1} used`);
    }
    // The ring asked for an interrupt for each of them; none has gone out yet.
    expect(native.eventfdRead(p.calls.receiveq)).toBeNull();
    await waitFor(() => native.eventfdRead(p.calls.receiveq) !== null, 3000, 'the held interrupt');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    const c = session.counters(0);
    expect(c.notifySent).toBe(2);
    expect(c.notifyCoalesced).toBe(3); // held once, joined twice
    // The ring trace says what coalescing did on the receiveq (vring 0), in order.
    await waitFor(() => traced.includes('"action":"sent","mode":"adaptive","frames":3'), 2000, 'traced');
    const events = traced
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { vring: number; ev: string; action?: string; frames?: number })
      .filter((e) => e.vring === 0 && e.ev === 'coalesce');
    expect(events.map((e) => `${e.action} ${e.frames}`)).toEqual([
      'sent 1',
      'held 1',
      'joined 2',
      'joined 3',
      'sent 3',
    ]);
    // /status and `vhost-user-net status` report the setting and the counts.
    const st = statusOf(
      srv!.backend,
      {},
      { coalesce: { mode: 'adaptive', usecs: 300_000, frames: 0, datapath: 'native' } },
    );
    expect(st.interrupts).toEqual({
      coalesce: 'adaptive',
      usecs: 300_000,
      frames: 0,
      appliesTo: 'vrings without a fault plan',
    });
    const text = formatStatus(st);
    expect(text).toContain('interrupt coalescing adaptive: 300000 us, 0 frames (vrings without a fault plan)');
    const row = text.find((l) => /^\s+0 receiveq0 /.test(l)) ?? '';
    expect(row).toContain(` 2/${c.notifySuppressed}/3 `);
    const ts = statusOf(srv!.backend, {}, { coalesce: { mode: 'adaptive', usecs: 50, frames: 64, datapath: 'ts' } });
    expect(ts.interrupts).toMatchObject({ coalesce: 'off', appliesTo: 'nothing (TS data path)' });
  });

  it('off: every frame interrupts at once', async () => {
    const { session, p, send } = await loopback({ mode: 'off', usecs: 300_000, frames: 0 });
    for (let i = 0; i < 4; i++) {
      send(i);
      await waitFor(() => p.receiveq.usedIdx() === i + 1, 2000, `frame ${i + 1} used`);
      await waitFor(() => native.eventfdRead(p.calls.receiveq) !== null, 2000, `interrupt ${i + 1}`);
    }
    const c = session.counters(0);
    expect(c.notifySent).toBe(4);
    expect(c.notifyCoalesced).toBe(0);
  });
});

describe('kicks while a worker busy-polls (native data path, loopback)', () => {
  let srv: Served | undefined;
  let fe: MockFrontend | undefined;
  afterEach(async () => {
    await shutdown(srv, fe);
    srv = fe = undefined;
  });

  it('--poll-us: an emptied transmitq keeps kicks off for the window, then turns them on', async () => {
    srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, 'native', undefined, undefined, undefined, {
      pollUs: 400_000,
    });
    const d = await bringUpDevice(srv, featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES));
    fe = d.fe;
    const p = d.pairs[0]!;
    d.ram.bytes.fill(0, 0x200000, 0x200000 + 72);
    p.transmitq.offer(p.transmitq.addChain([{ addr: 0x200000n, len: 72, write: false }]));
    p.transmitq.publish();
    native.eventfdWrite(p.kicks.transmitq, 1n);
    await waitFor(() => p.transmitq.usedIdx() === 1, 2000, 'the chain used');
    const t0 = Date.now();
    // VRING_USED_F_NO_NOTIFY (1): the device is still looking, the driver need not kick.
    expect(p.transmitq.usedFlags() & 1).toBe(1);
    await waitFor(() => (p.transmitq.usedFlags() & 1) === 0, 3000, 'kicks on again');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
  });
});
