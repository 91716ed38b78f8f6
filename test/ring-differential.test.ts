/**
 * Differential property tests: random operation sequences (well formed and broken chains,
 * publishes, pops, completions, notification decisions) are applied to the TS reference ring
 * and to the C++ ring, each over its own copy of the same guest memory. After every step the
 * results, the ring state and every byte of guest memory must be equal. The named regression
 * cases also hold the outcome to a known answer (test/ring-known-answers.test.ts has the rest).
 *
 * VUN_DIFF_RUNS sets the number of sequences (default 5000; see docs/testing.md for long runs).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ringErrorNames } from '../src/virtio/ring-errors.js';
import { native } from './helpers/harness.js';
import type { DescSpec } from './helpers/ring-driver.js';
import { addrArb, descsArb, deviceSteps } from './helpers/ring-cases.js';
import { closeSides, type Features, GPA_B, NUM, type Op, openSides, runSequence } from './helpers/ring-pair.js';

beforeAll(openSides);
afterAll(closeSides);

// --- operations --------------------------------------------------------------------------

const addr = addrArb;
const descs = descsArb;
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
  ...deviceSteps(1),
);

const features = fc.record({
  eventIdx: fc.boolean(),
  indirect: fc.boolean(),
  notifyOnEmpty: fc.boolean(),
  inOrderBatch: fc.boolean(),
});
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
interface Regression {
  ops: Op[];
  feat?: Partial<Features>;
  start?: number;
  /** What must happen (the outcome both rings agreed on must also be this). */
  expect: Record<string, unknown>;
}
const regressions: Record<string, Regression> = {
  test_regression_chain_crossing_region_edge: {
    ops: [
      { op: 'chain', descs: [d(GPA_B - 100n, 300), d(0x3000n, 64, true)] },
      { op: 'publish' },
      { op: 'pop', max: 4 },
      { op: 'complete', count: 1, lens: [64, 0, 0, 0, 0, 0, 0, 0] },
    ],
    expect: { popped: [[0]], used: [{ id: 0, len: 64 }], notify: [true], state: { broken: false, usedIdx: 1 } },
  },
  test_regression_loop_to_self: {
    ops: [{ op: 'raw', addr: 0x3000n, len: 10, flags: 1, next: 0 }, { op: 'publish' }, { op: 'pop', max: 4 }],
    expect: { popped: [[]], error: 'DESC_LOOP' },
  },
  test_regression_indirect_with_next_flag: {
    ops: [{ op: 'indirect', descs: [d(0x3000n, 10)], extraFlags: 1 }, { op: 'publish' }, { op: 'pop', max: 4 }],
    feat: { indirect: true },
    expect: { popped: [[]], error: 'INDIRECT_NESTED' },
  },
  test_regression_indirect_not_negotiated: {
    ops: [{ op: 'indirect', descs: [d(0x3000n, 10)] }, { op: 'publish' }, { op: 'pop', max: 4 }],
    expect: { popped: [[]], error: 'INDIRECT_NOT_NEGOTIATED' },
  },
  test_regression_avail_jump_across_wrap: {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10)] },
      { op: 'publish', jump: NUM + 1 },
      { op: 'pop', max: 4 },
    ],
    start: 0xfffa,
    expect: { popped: [[]], error: 'AVAIL_IDX_JUMP', state: { lastAvailIdx: 0xfffa } },
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
    // The first interrupt since the start is always sent; used->idx wraps to 0.
    expect: { popped: [[0, 1]], notify: [true], state: { usedIdx: 0, lastAvailIdx: 0, broken: false } },
  },
};

describe('split ring regressions', () => {
  it.each(Object.entries(regressions))('%s', (_name, r) => {
    for (const trace of [false, true]) {
      const got = runSequence(
        r.ops,
        { eventIdx: false, indirect: false, notifyOnEmpty: false, ...r.feat },
        r.start ?? 0,
        trace,
      );
      expect(got).toMatchObject(r.expect);
    }
  });
});
