/**
 * Differential property tests: random operation sequences (well formed and broken chains,
 * publishes, pops, completions, notification decisions) are applied to the TS reference ring
 * and to the C++ ring, each over its own copy of the same guest memory. After every step the
 * results, the ring state and every byte of guest memory must be equal.
 *
 * VUN_DIFF_RUNS sets the number of sequences (default 5000; see docs/testing.md for long runs).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestMemoryRef } from '../src/virtio/guest-memory.js';
import { ringErrorNames } from '../src/virtio/ring-errors.js';
import { type Element, SplitRingRef } from '../src/virtio/split-ring.js';
import { records } from '../src/trace/observe.js';
import type { RingEvent } from '../src/trace/ring-trace.js';
import { native } from './helpers/harness.js';
import { RingDriver, type DescSpec } from './helpers/ring-driver.js';

const REGION = 32 * 1024;
const GPA_A = 0n;
const GPA_B = BigInt(REGION); // contiguous with A: buffers may cross the edge at 32 KiB
const VA_A = 0x7f00_0000_0000n;
const VA_B = VA_A + BigInt(REGION);
const HOLE = 0x10_0000n; // not guest memory
const NUM = 16;
const LAYOUT = { num: NUM, descOff: 0, availOff: 0x400, usedOff: 0x800, gpaBase: GPA_A, vaBase: VA_A };
const INDIRECT_OFF = 0x1000;
const DATA_LO = 0x2000n;
const DATA_HI = 2n * BigInt(REGION);

interface Side {
  fd: number;
  maps: number[];
  bytes: Uint8Array[];
}
let sides: Side[] = [];

function makeSide(): Side {
  const fd = native.memfdCreate('diff', 2 * REGION);
  const maps = [native.mmapFd(fd, REGION, 0), native.mmapFd(fd, REGION, REGION)];
  return { fd, maps, bytes: maps.map((m) => new Uint8Array(native.mappingBuffer(m))) };
}

beforeAll(() => {
  sides = [makeSide(), makeSide()];
});
afterAll(() => {
  for (const s of sides) {
    for (const m of s.maps) native.munmap(m);
    native.close(s.fd);
  }
});

// --- operations --------------------------------------------------------------------------

type Op =
  | { op: 'chain'; descs: DescSpec[] }
  | { op: 'indirect'; descs: DescSpec[]; tableLen?: number; extraFlags?: number }
  | { op: 'raw'; addr: bigint; len: number; flags: number; next: number }
  | { op: 'publish'; jump?: number }
  | { op: 'pop'; max: number }
  | { op: 'complete'; count: number; lens: number[] }
  | { op: 'rewind' }
  | { op: 'usedEvent'; v: number }
  | { op: 'availFlags'; v: number }
  | { op: 'notifyEnable'; on: boolean };

// Mostly well-formed chains (so pops, completions and notifications get exercised), with a
// steady share of every kind of breakage.
const addr = fc.oneof(
  { weight: 30, arbitrary: fc.bigInt(DATA_LO, DATA_HI - 3001n) },
  { weight: 1, arbitrary: fc.bigInt(HOLE, HOLE + 0x1000n) },
  { weight: 1, arbitrary: fc.constant(DATA_HI - 8n) }, // runs off the end of memory
  { weight: 3, arbitrary: fc.constant(GPA_B - 100n) }, // crosses the region edge
);
const len = fc.oneof(
  { weight: 40, arbitrary: fc.integer({ min: 1, max: 3000 }) },
  { weight: 1, arbitrary: fc.constant(0) },
);
const desc = fc.record({ addr, len, write: fc.boolean() });
// Readable descriptors first (§2.7.4.2) unless the generator decides to break that rule.
const descs = fc
  .tuple(fc.array(desc, { minLength: 1, maxLength: 5 }), fc.nat(19))
  .map(([ds, r]) => (r === 0 ? ds : [...ds.filter((x) => !x.write), ...ds.filter((x) => x.write)]));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: descs.map((d) => ({ op: 'chain' as const, descs: d })) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('indirect' as const),
      descs,
      tableLen: fc.option(fc.integer({ min: 0, max: 96 }), { nil: undefined, freq: 5 }),
      extraFlags: fc.option(fc.constantFrom(1, 4), { nil: undefined, freq: 6 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('raw' as const),
      addr,
      len: fc.integer({ min: 0, max: 2000 }),
      flags: fc.integer({ min: 0, max: 7 }),
      next: fc.integer({ min: 0, max: NUM + 2 }),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('publish' as const),
      jump: fc.option(fc.integer({ min: NUM + 1, max: 300 }), { nil: undefined, freq: 25 }),
    }),
  },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('pop' as const), max: fc.integer({ min: 1, max: 8 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('complete' as const),
      count: fc.integer({ min: 1, max: 8 }),
      lens: fc.array(fc.nat(5000), { minLength: 8, maxLength: 8 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'rewind' as const }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('usedEvent' as const), v: fc.nat(0xffff) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('availFlags' as const), v: fc.nat(1) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('notifyEnable' as const), on: fc.boolean() }) },
);

interface Features {
  eventIdx: boolean;
  indirect: boolean;
  notifyOnEmpty: boolean;
}

const strip = (elems: Element[]) =>
  elems.map((e) => ({
    head: e.head,
    out: e.out.map((s) => [s.gpa, s.len]),
    in: e.in.map((s) => [s.gpa, s.len]),
    outLen: e.outLen,
    inLen: e.inLen,
  }));

/** Runs one sequence; throws on the first difference. */
function runSequence(ops: Op[], feat: Features, startIdx: number, trace = false): void {
  for (const s of sides) for (const b of s.bytes) b.fill(0);
  const driver = new RingDriver(
    sides.flatMap((s) => [s.bytes[0] as Uint8Array]),
    LAYOUT,
    GPA_A + BigInt(INDIRECT_OFF),
    INDIRECT_OFF,
  );
  driver.availIdx = startIdx;
  driver.publish();
  const cfg = { num: NUM, descVa: driver.descVa, availVa: driver.availVa, usedVa: driver.usedVa, ...feat };
  const s0 = sides[0] as Side;
  const s1 = sides[1] as Side;
  const ref = new SplitRingRef(
    new GuestMemoryRef([
      { gpa: GPA_A, size: BigInt(REGION), va: VA_A, bytes: s0.bytes[0] as Uint8Array },
      { gpa: GPA_B, size: BigInt(REGION), va: VA_B, bytes: s0.bytes[1] as Uint8Array },
    ]),
    cfg,
    startIdx,
    startIdx,
  );
  const fast = new native.RingModel(
    [
      { mappingId: s1.maps[0] as number, gpa: GPA_A, size: BigInt(REGION), va: VA_A },
      { mappingId: s1.maps[1] as number, gpa: GPA_B, size: BigInt(REGION), va: VA_B },
    ],
    {
      num: NUM,
      desc: cfg.descVa,
      avail: cfg.availVa,
      used: cfg.usedVa,
      ...feat,
      lastAvailIdx: startIdx,
      usedIdx: startIdx,
      trace,
    },
  );
  // With `trace`, both rings also report every step; the C++ records must decode to the same
  // events the reference emits (the ring trace reads the same on either data path).
  const refEvents: RingEvent[] = [];
  if (trace) ref.onEvent = (e) => refEvents.push(structuredClone(e));
  const outstanding: Element[] = [];
  let poppedNotFilled = 0;
  ops.forEach((o, step) => {
    const where = `step ${step} ${JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`;
    switch (o.op) {
      case 'chain':
        driver.offer(driver.addChain(o.descs));
        break;
      case 'indirect':
        driver.offer(driver.addIndirect(o.descs, { tableLen: o.tableLen, extraFlags: o.extraFlags }));
        break;
      case 'raw': {
        const [i] = driver.allocDescs(1);
        driver.rawDesc(i as number, o.addr, o.len, o.flags, o.next);
        driver.offer(i as number);
        break;
      }
      case 'publish':
        driver.publish(o.jump !== undefined ? (driver.availIdx + o.jump) & 0xffff : driver.availIdx);
        break;
      case 'pop': {
        const a = ref.popBurst(o.max);
        const b = fast.popBurst(o.max);
        expect(b, where).toEqual(strip(a));
        outstanding.push(...a);
        poppedNotFilled = a.length;
        break;
      }
      case 'complete': {
        const n = Math.min(o.count, outstanding.length);
        const done = outstanding.splice(0, n);
        done.forEach((e, k) => {
          const len = Math.min(o.lens[k] ?? 0, e.inLen);
          ref.fill(e.head, len, k);
          fast.fill(e.head, len, k);
        });
        ref.flush(n);
        fast.flush(n);
        expect(fast.needNotify(), where).toBe(ref.needNotify());
        poppedNotFilled = 0;
        break;
      }
      case 'rewind':
        // Only chains popped by the last pop and not filled may be given back.
        if (poppedNotFilled > 0 && outstanding.length >= poppedNotFilled) {
          outstanding.splice(outstanding.length - poppedNotFilled);
          ref.rewind(poppedNotFilled);
          fast.rewind(poppedNotFilled);
          poppedNotFilled = 0;
        }
        break;
      case 'usedEvent':
        driver.setUsedEvent(o.v);
        break;
      case 'availFlags':
        driver.setAvailFlags(o.v);
        break;
      case 'notifyEnable':
        if (!ref.broken) {
          ref.setNotification(o.on);
          fast.setNotification(o.on);
        }
        break;
    }
    expect(fast.state(), where).toEqual(ref.state());
    if (trace) {
      const got = [...records(fast.drainTrace())].map((r) => (r.kind === 'ring' ? r.event : r));
      expect(got, `${where}: ring trace`).toEqual(refEvents.splice(0));
    }
    for (let r = 0; r < 2; r++) {
      const x = s0.bytes[r] as Uint8Array;
      const y = s1.bytes[r] as Uint8Array;
      if (Buffer.compare(x, y) !== 0) {
        const at = x.findIndex((v, i) => v !== y[i]);
        throw new Error(`${where}: guest memory differs in region ${r} at offset 0x${at.toString(16)}`);
      }
    }
  });
}

const features = fc.record({ eventIdx: fc.boolean(), indirect: fc.boolean(), notifyOnEmpty: fc.boolean() });
const RUNS = Number(process.env.VUN_DIFF_RUNS ?? 5000);

describe('split ring: TS reference vs C++ fast path', () => {
  it('shares the error table', () => {
    expect(native.ringErrorNames).toEqual(ringErrorNames);
  });

  it(`agrees on ${RUNS} random operation sequences`, () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 1, maxLength: 40 }),
        features,
        fc.constantFrom(0, 7, 0xfffa),
        fc.boolean(),
        (ops, feat, start, trace) => {
          runSequence(ops, feat, start, trace);
        },
      ),
      { numRuns: RUNS, seed: process.env.VUN_DIFF_SEED ? Number(process.env.VUN_DIFF_SEED) : undefined },
    );
  }, 600_000);
});

// Named regression cases: shapes worth keeping whatever the random runs find.
const d = (a: bigint, len: number, write = false): DescSpec => ({ addr: a, len, write });
const regressions: Record<string, { ops: Op[]; feat?: Partial<Features>; start?: number }> = {
  test_regression_chain_crossing_region_edge: {
    ops: [
      { op: 'chain', descs: [d(GPA_B - 100n, 300), d(0x3000n, 64, true)] },
      { op: 'publish' },
      { op: 'pop', max: 4 },
      { op: 'complete', count: 1, lens: [64, 0, 0, 0, 0, 0, 0, 0] },
    ],
  },
  test_regression_loop_to_self: {
    ops: [{ op: 'raw', addr: 0x3000n, len: 10, flags: 1, next: 0 }, { op: 'publish' }, { op: 'pop', max: 4 }],
  },
  test_regression_indirect_with_next_flag: {
    ops: [{ op: 'indirect', descs: [d(0x3000n, 10)], extraFlags: 1 }, { op: 'publish' }, { op: 'pop', max: 4 }],
    feat: { indirect: true },
  },
  test_regression_indirect_not_negotiated: {
    ops: [{ op: 'indirect', descs: [d(0x3000n, 10)] }, { op: 'publish' }, { op: 'pop', max: 4 }],
  },
  test_regression_avail_jump_across_wrap: {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10)] },
      { op: 'publish', jump: NUM + 1 },
      { op: 'pop', max: 4 },
    ],
    start: 0xfffa,
  },
  test_regression_event_idx_wrap: {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10, true)] },
      { op: 'chain', descs: [d(0x3100n, 10, true)] },
      { op: 'publish' },
      { op: 'usedEvent', v: 0xfffe },
      { op: 'pop', max: 4 },
      { op: 'complete', count: 2, lens: [10, 10, 0, 0, 0, 0, 0, 0] },
    ],
    feat: { eventIdx: true },
    start: 0xfffe,
  },
};

describe('split ring regressions', () => {
  it.each(Object.entries(regressions))('%s', (_name, r) => {
    for (const trace of [false, true])
      runSequence(r.ops, { eventIdx: false, indirect: false, notifyOnEmpty: false, ...r.feat }, r.start ?? 0, trace);
  });
});
