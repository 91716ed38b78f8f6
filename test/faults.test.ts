/**
 * Fault plans: validation with precise errors, the decision function held between TS and C++,
 * each action's effect as the guest's rings show it, determinism (the same plan and operations
 * give the same fault log on both data paths and on every run), and the rates over 100,000
 * frames. The guest's reactions are in guest-tests/faults/.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, ErrorCode } from '../src/errors.js';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import type { FaultLine } from '../src/faults/log.js';
import { compilePlan, draw, FIELD, FIELD_NAMES, type FaultPlan } from '../src/faults/plan.js';
import { DESC_F_NEXT, DESC_F_WRITE } from '../src/virtio/ring-types.js';
import { type DatapathKind, native, planDevices, waitFor } from './helpers/harness.js';
import { type DriverPair, transmit } from './helpers/mock-frontend.js';
import { numberedFrame } from './helpers/frames.js';

const BASE = featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES);
const RX_BASE = 0x100000;
const RX_SIZE = 2048;
const HDR = 12;

function refusal(input: unknown, vrings = 2): ConfigError {
  try {
    compilePlan(input, vrings);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('accepted');
}

describe('fault plans: validation', () => {
  it('field codes name one field each (the log and native/faults.h kField* read them by number)', () => {
    expect(new Set(FIELD_NAMES).size).toBe(FIELD_NAMES.length);
    expect([FIELD.len, FIELD.id, FIELD.byte, FIELD.addr, FIELD.desc_flags]).toEqual([7, 8, 9, 10, 11]);
  });

  it.each([
    [{ seed: 1, rules: [{ name: 'a', on: 'transmitq0', do: 'explode' }] }, /rules.0.do: /],
    [{ seed: 1, rules: [{ name: 'a', on: 'receiveq3', do: 'drop' }] }, /rules.0.on: receiveq3 does not exist/],
    [{ seed: 1, rules: [{ name: 'a', on: 'receiveq0', do: 'drop', probability: 1.5 }] }, /rules.0.probability: /],
    [{ seed: 1, rules: [{ name: 'a', on: 'rxq0', do: 'drop' }] }, /rules.0.on: must be receiveqN/],
    [{ seed: 1, rules: [{ name: 'a', on: 'receiveq0', do: 'used-len', value: '4096' }] }, /"\+N", "-N" or "=N"/],
    [{ seed: 1, rules: [{ name: 'a', on: 'receiveq0', do: 'used-id', value: 'maybe' }] }, /"out-of-range"/],
    [{ seed: 1, rules: [{ name: 'a', on: 'receiveq0', do: 'header', value: 1 }] }, /header needs field/],
    [{ seed: 1, rules: [{ name: 'a', on: 'receiveq0', do: 'header', field: 'flags', value: 300 }] }, /0\.\.255/],
    [{ seed: 1, rules: [{ name: 'a', on: 'receiveq0', do: 'withhold' }] }, /withhold applies to transmitqs/],
    [{ seed: 1, rules: [{ name: 'a', on: 'transmitq0', do: 'notify-drop' }] }, /notify-drop needs a window/],
    [
      {
        seed: 1,
        rules: [
          { name: 'a', on: '*', do: 'drop' },
          { name: 'a', on: '*', do: 'drop' },
        ],
      },
      /used twice/,
    ],
    [{ seed: -1, rules: [] }, /seed: /],
    [{ rules: [] }, /seed: /],
  ])('refuses %j with the path and reason', (plan, why) => {
    const e = refusal(plan);
    expect(e.code).toBe(ErrorCode.FaultPlanInvalid);
    expect(e.message).toMatch(why);
  });

  it('names every problem at once', () => {
    const e = refusal({
      seed: 1,
      rules: [
        { name: 'a', on: 'receiveq9', do: 'drop' },
        { name: 'b', on: 'receiveq0', do: 'drop', probability: 2 },
      ],
    });
    expect(e.issues.length).toBe(1); // zod stops at the schema; fix it and the rest is named
    const f = refusal({
      seed: 1,
      rules: [
        { name: 'a', on: 'receiveq9', do: 'drop' },
        { name: 'b', on: 'receiveq0', do: 'runt', value: 3 },
      ],
    });
    expect(f.issues).toEqual([
      'rules.0.on: receiveq9 does not exist (the device has 1 queue pairs)',
      'rules.1.value: runt takes no value or field',
    ]);
  });

  it('compiles wildcards to one row per vring they name', () => {
    const p = compilePlan({ seed: 3, rules: [{ name: 'x', on: 'receiveq*', do: 'drop', every: 2 }] }, 8);
    expect(p.rules.map((r) => r.vring)).toEqual([0, 2, 4, 6]);
    const q = compilePlan({ seed: 3, rules: [{ name: 'x', on: '*', do: 'duplicate' }] }, 4);
    expect(q.rules.map((r) => r.vring)).toEqual([0, 1, 2, 3]);
  });
});

describe('fault decisions: TS and C++ draw the same numbers', () => {
  it('known answers (splitmix64 finalizer over seed, rule, vring, event)', () => {
    for (const [seed, rule, vring, event] of [
      [0, 0, 0, 0n],
      [7, 1, 3, 12345n],
      [0xffffffff, 63, 127, (1n << 64n) - 1n],
    ] as const) {
      expect(native.netRules.faultDraw(seed, rule, vring, event)).toBe(draw(seed, rule, vring, event));
    }
    // Fixed points so a change of the function is seen, not just a change in both.
    expect(draw(0, 0, 0, 0n)).toBe(draw(0, 0, 0, 0n));
    expect(draw(1, 0, 0, 0n)).not.toBe(draw(0, 0, 0, 0n));
    expect(draw(0, 0, 0, 1n)).not.toBe(draw(0, 0, 0, 0n));
  });
  it('on random inputs', () => {
    fc.assert(
      fc.property(fc.nat(0xffffffff), fc.nat(63), fc.nat(127), fc.bigInt(0n, (1n << 64n) - 1n), (s, r, v, e) => {
        expect(native.netRules.faultDraw(s, r, v, e)).toBe(draw(s, r, v, e));
      }),
      { numRuns: 2000 },
    );
  });
});

// --- through the data path --------------------------------------------------------------------

const devices = planDevices();
afterEach(() => devices.end());
const device = (datapath: DatapathKind, host: 'loopback' | 'null', plan: FaultPlan, features = BASE) =>
  devices.device(datapath, host, plan, features);

async function postRx(session: { vrings: { started: boolean }[] }, p: DriverPair, count: number): Promise<void> {
  for (let i = 0; i < count; i++)
    p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(RX_BASE + i * RX_SIZE), len: RX_SIZE, write: true }]));
  p.receiveq.publish();
  native.eventfdWrite(p.kicks.receiveq, 1n);
  await waitFor(() => session.vrings[0]?.started === true, 2000, 'receiveq started');
}

/** The fault log without times (what must repeat exactly). */
const timeless = (lines: FaultLine[]) => lines.map(({ t: _t, ...l }) => l);

describe.each(['native', 'ts'] as const)('fault actions on the %s data path', (datapath) => {
  it('each action shows in the guest rings: header, runt, used-len, used-id, corrupt, withhold', async () => {
    const plan: FaultPlan = {
      seed: 9,
      rules: [
        { name: 'gso', on: 'receiveq0', do: 'header', field: 'gso_size', value: 777, count: 1 },
        { name: 'short', on: 'receiveq0', do: 'runt', after: 1, count: 1 },
        { name: 'long', on: 'receiveq0', do: 'used-len', value: '+100', after: 2, count: 1 },
        { name: 'bad-id', on: 'receiveq0', do: 'used-id', value: 'out-of-range', after: 3, count: 1 },
        { name: 'flip', on: 'transmitq0', do: 'corrupt', after: 4, count: 1 },
        { name: 'keep', on: 'transmitq0', do: 'withhold', after: 5, count: 1 },
      ],
    };
    const { session, ram, pair, lines } = await device(datapath, 'loopback', plan);
    await postRx(session, pair, 16);
    const frames = Array.from({ length: 6 }, (_, i) => numberedFrame(i));
    transmit(native, ram, pair, frames);
    await waitFor(() => pair.receiveq.usedIdx() === 6, 5000, 'six frames back');
    await waitFor(() => lines.length === 6, 2000, 'six faults logged');
    const used = Array.from({ length: 6 }, (_, i) => pair.receiveq.usedElem(i));
    const buf = (id: number) => ram.bytes.subarray(RX_BASE + id * RX_SIZE, RX_BASE + (id + 1) * RX_SIZE);
    // 0: gso_size (header bytes 4-5) reads 777.
    expect(Buffer.from(buf(used[0]?.id as number)).readUInt16LE(4)).toBe(777);
    // 1: a runt, shorter than a header and an Ethernet header.
    expect(used[1]?.len).toBe(HDR + 6);
    // 2: 100 bytes more than were written.
    expect(used[2]?.len).toBe(HDR + 100 + 100);
    // 3: an id the driver's table does not have (the queue size).
    expect(used[3]?.id).toBe(256);
    // 4: the last byte has one bit flipped, the rest intact.
    const got = Buffer.from(buf(used[4]?.id as number).subarray(HDR, HDR + 100));
    const want = frames[4] as Buffer;
    const diff = [...got].map((b, k) => b ^ (want[k] as number));
    expect(diff.slice(0, 99).every((d) => d === 0)).toBe(true);
    expect([1, 2, 4, 8, 16, 32, 64, 128]).toContain(diff[99]);
    // 5: sent, but its transmit chain never completed.
    await waitFor(() => pair.transmitq.usedIdx() === 5, 2000, 'five transmit chains used');
    expect(session.counters(1).frames).toBe(6);
    expect(timeless(lines).map((l) => [l.rule, l.vring, l.event, l.field, l.old, l.new])).toEqual([
      ['gso', 0, 0, 'gso_size', 0, 777],
      ['short', 0, 1, 'len', HDR + 100, HDR + 6],
      ['long', 0, 2, 'len', HDR + 100, HDR + 200],
      ['bad-id', 0, 3, 'id', used[3] ? lines[3]?.old : -1, 256],
      ['flip', 1, 4, 'byte', 4, 4 ^ diff[99]!],
      ['keep', 1, 5, 'id', lines[5]?.old, 0],
    ]);
    const status = devices.srv?.backend.faultLog.perRule();
    expect(status?.map((r) => r.injected)).toEqual([1, 1, 1, 1, 1, 1]);
  });

  it("not-a-head names the chain's second descriptor; desc-rewrite changes a posted descriptor in guest memory", async () => {
    const plan: FaultPlan = {
      seed: 4,
      rules: [
        { name: 'second', on: 'receiveq0', do: 'used-id', value: 'not-a-head', count: 1 },
        { name: 'addr', on: 'receiveq0', do: 'desc-rewrite', field: 'addr', value: '0xdead0000', after: 1, count: 1 },
        { name: 'len', on: 'transmitq0', do: 'desc-rewrite', field: 'len', value: 7, count: 1 },
      ],
    };
    const { session, ram, pair, lines } = await device(datapath, 'loopback', plan);
    // Two receive chains of two descriptors, each second descriptor far from its head: 40 -> 90, 41 -> 91.
    for (const [h, n] of [
      [40, 90],
      [41, 91],
    ] as const) {
      const at = BigInt(RX_BASE + (h - 40) * RX_SIZE);
      pair.receiveq.rawDesc(h, at, 8, DESC_F_WRITE | DESC_F_NEXT, n);
      pair.receiveq.rawDesc(n, at + 8n, RX_SIZE - 8, DESC_F_WRITE, 0);
      pair.receiveq.offer(h);
    }
    pair.receiveq.publish();
    native.eventfdWrite(pair.kicks.receiveq, 1n);
    await waitFor(() => session.vrings[0]?.started === true, 2000, 'receiveq started');
    transmit(native, ram, pair, [numberedFrame(1), numberedFrame(2)]);
    await waitFor(() => pair.receiveq.usedIdx() === 2, 5000, 'two frames back');
    await waitFor(() => lines.length === 3, 2000, 'three faults logged');
    expect(pair.receiveq.usedElem(0).id, "the first chain's second descriptor").toBe(90);
    expect(pair.receiveq.usedElem(1).id).toBe(41);
    expect(pair.receiveq.readDesc(41).addr).toBe(0xdead0000n);
    const lenFault = lines.find((l) => l.rule === 'len');
    expect(pair.transmitq.readDesc(lenFault?.ringIdx as number).len).toBe(7);
    expect(timeless(lines).map((l) => [l.rule, l.ringIdx, l.field, l.new])).toEqual(
      expect.arrayContaining([
        ['second', 40, 'id', 90],
        ['addr', 41, 'addr', 0xdead0000],
        ['len', lenFault?.ringIdx, 'len', 7],
      ]),
    );
  });

  it('notify-drop: while its window is open the guest is not interrupted, and every held-back interrupt is logged', async () => {
    const plan: FaultPlan = {
      seed: 3,
      rules: [{ name: 'quiet', on: 'receiveq0', do: 'notify-drop', atMs: 0, forMs: 600_000 }],
    };
    const { session, ram, pair, lines } = await device(datapath, 'loopback', plan);
    await postRx(session, pair, 16);
    native.eventfdRead(pair.calls.receiveq); // whatever start-up signalled
    transmit(native, ram, pair, [numberedFrame(1), numberedFrame(2), numberedFrame(3)]);
    await waitFor(() => pair.receiveq.usedIdx() === 3, 5000, 'frames in the receiveq');
    await waitFor(() => lines.length > 0, 2000, 'held-back interrupts logged');
    expect(native.eventfdRead(pair.calls.receiveq), 'the receiveq call fd was signalled').toBeNull();
    expect(lines.every((l) => l.rule === 'quiet' && l.do === 'notify-drop' && l.vring === 0)).toBe(true);
    // The transmitq has no rule: its interrupts still go out.
    await waitFor(() => native.eventfdRead(pair.calls.transmitq) !== null, 2000, 'transmitq interrupt');
  });

  it('notify-drop: the interrupt held back is owed, so the first one after the window goes out (EVENT_IDX)', async () => {
    const plan: FaultPlan = {
      seed: 3,
      rules: [{ name: 'quiet', on: 'receiveq0', do: 'notify-drop', atMs: 0, forMs: 700 }],
    };
    const { session, ram, pair, lines } = await device(
      datapath,
      'loopback',
      plan,
      BASE | featureMask(F.RING_F_EVENT_IDX),
    );
    const t0 = performance.now();
    await postRx(session, pair, 16);
    pair.receiveq.setUsedEvent(0); // the driver wants an interrupt for the first used entry
    native.eventfdRead(pair.calls.receiveq);
    transmit(native, ram, pair, [numberedFrame(1)]);
    await waitFor(
      () => pair.receiveq.usedIdx() === 1 && lines.length > 0,
      5000,
      'a frame used, its interrupt held back',
    );
    expect(native.eventfdRead(pair.calls.receiveq)).toBeNull();
    expect(performance.now() - t0, 'still inside the window').toBeLessThan(700);
    await new Promise((r) => setTimeout(r, 750 - (performance.now() - t0)));
    transmit(native, ram, pair, [numberedFrame(2)]);
    await waitFor(() => pair.receiveq.usedIdx() === 2, 5000, 'the second frame used');
    await waitFor(() => native.eventfdRead(pair.calls.receiveq) !== null, 2000, 'the owed interrupt after the window');
  });

  it('drop and duplicate land within 5 standard deviations of p over 100,000 frames', async () => {
    const p = 0.1;
    const plan: FaultPlan = {
      seed: 2026,
      rules: [
        { name: 'lose', on: 'transmitq0', do: 'drop', probability: p },
        { name: 'twice', on: 'transmitq0', do: 'duplicate', probability: p },
      ],
    };
    const { session, ram, pair, lines } = await device(datapath, 'null', plan);
    const N = 100_000;
    const BATCH = 200;
    const frame = [numberedFrame(1, 60)];
    for (let sent = 0; sent < N; sent += BATCH) {
      transmit(native, ram, pair, Array(BATCH).fill(frame[0]), { kick: false });
      native.eventfdWrite(pair.kicks.transmitq, 1n);
      await waitFor(() => pair.transmitq.usedIdx() === (sent + BATCH) % 65536, 10_000, `batch at ${sent}`);
    }
    await waitFor(() => session.counters(1).bursts > 0 && lines.length > 0, 2000, 'faults logged');
    await new Promise((r) => setTimeout(r, 100)); // the last observation drain
    const drops = lines.filter((l) => l.rule === 'lose').length;
    const dups = lines.filter((l) => l.rule === 'twice').length;
    const sigma = Math.sqrt((p * (1 - p)) / N);
    expect(Math.abs(drops / N - p)).toBeLessThan(5 * sigma);
    // A duplicate of a dropped frame is never sent: it is decided, but not told.
    const dupTold = dups;
    expect(Math.abs(dupTold / N - p * (1 - p))).toBeLessThan(5 * Math.sqrt((p * (1 - p) * (1 - p * (1 - p))) / N));
    // What the host got: every frame not dropped, and the duplicates once more.
    expect(session.counters(1).frames).toBe(N - drops + dupTold);
  }, 120_000);
});

const byVring = (ls: ReturnType<typeof timeless>) =>
  [...ls].sort((a, b) => Number(a.vring) - Number(b.vring) || a.seq - b.seq);

describe('determinism', () => {
  const plan: FaultPlan = {
    seed: 77,
    rules: [
      { name: 'lose', on: 'transmitq0', do: 'drop', probability: 0.1 },
      { name: 'twice', on: 'transmitq0', do: 'duplicate', probability: 0.1 },
      { name: 'flip', on: 'transmitq0', do: 'corrupt', every: 7 },
      { name: 'long', on: 'transmitq0', do: 'used-len', value: '+5', every: 11 },
      { name: 'gso', on: 'receiveq0', do: 'header', field: 'gso_size', value: 1234, every: 5 },
      { name: 'short', on: 'receiveq0', do: 'runt', every: 13 },
      { name: 'lose-in', on: 'receiveq0', do: 'drop', probability: 0.05 },
      { name: 'bad-id', on: 'receiveq0', do: 'used-id', value: 'repeat', every: 17 },
    ],
  };
  // With a delay, frames reach the receiveq later than the transmitq's next events: the two
  // vrings' lines interleave as the threads ran, while each vring's lines stay the same.
  const timed: FaultPlan = {
    ...plan,
    rules: [
      ...plan.rules,
      { name: 'late', on: 'transmitq0', do: 'delay', value: 2, jitter: 1, distribution: 'normal', every: 9 },
      { name: 'burst-loss', on: 'receiveq0', do: 'loss-gilbert', gilbert: { p: 0.05, r: 0.4 } },
    ],
  };
  async function run(datapath: DatapathKind, p = plan): Promise<ReturnType<typeof timeless>> {
    const { session, ram, pair, lines } = await device(datapath, 'loopback', p);
    await postRx(session, pair, 250);
    for (let b = 0; b < 5; b++) {
      transmit(
        native,
        ram,
        pair,
        Array.from({ length: 30 }, (_, i) => numberedFrame(b * 30 + i)),
      );
      await waitFor(() => pair.transmitq.usedIdx() >= (b + 1) * 30 - 3, 5000, `batch ${b}`);
    }
    await new Promise((r) => setTimeout(r, 200)); // the held frames and the last observation drain
    await devices.end();
    return timeless(lines);
  }

  it('the same plan and operations give the same fault log: twice on each path, and across paths', async () => {
    const native1 = await run('native');
    const native2 = await run('native');
    const ts1 = await run('ts');
    const ts2 = await run('ts');
    expect(native1.length).toBeGreaterThan(40);
    expect(JSON.stringify(native2)).toBe(JSON.stringify(native1));
    expect(JSON.stringify(ts2)).toBe(JSON.stringify(ts1));
    // Across paths: each line is the same; only how the two vrings' lines interleave may differ.
    expect(JSON.stringify(byVring(ts1))).toBe(JSON.stringify(byVring(native1)));
  }, 60_000);

  it("with delay and loss-gilbert in the plan, each vring's lines are the same on every run and both paths", async () => {
    const native1 = await run('native', timed);
    const native2 = await run('native', timed);
    const ts1 = await run('ts', timed);
    const ts2 = await run('ts', timed);
    expect(native1.filter((l) => l.do === 'delay').length).toBeGreaterThan(10);
    expect(native1.filter((l) => l.do === 'loss-gilbert').length).toBeGreaterThan(3);
    for (const other of [native2, ts1, ts2])
      expect(JSON.stringify(byVring(other))).toBe(JSON.stringify(byVring(native1)));
  }, 60_000);
});
