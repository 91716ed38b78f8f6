/**
 * The packed ring (virtio 1.2 §2.8): known answers, case by case, each run on the TS reference
 * and on the C++ ring over the same bytes (helpers/ring-pair.ts; the driver side is
 * helpers/packed-driver.ts), then the differential property test: random operation sequences,
 * broken ones included, with results, ring state, trace and every byte of guest memory compared
 * after every step.
 *
 * Positions are vhost-user's encoding: bits 0-14 the position, bit 15 the wrap counter; both
 * sides start at 0x8000 (position 0, wrap counter 1, §2.8.1) unless a case says otherwise.
 * VUN_DIFF_RUNS sets the number of random sequences (default 5000).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ringErrorNames } from '../src/virtio/ring-errors.js';
import { addrArb, breaks, type Case, checkCase, d, descsArb, deviceSteps, pop, publish } from './helpers/ring-cases.js';
import {
  closeSides,
  DATA_HI,
  type Features,
  GPA_B,
  HOLE,
  NUM,
  type Op,
  openSides,
  runSequence,
} from './helpers/ring-pair.js';

beforeAll(openSides);
afterAll(closeSides);

const NEXT = 1;
const INDIRECT = 4;
const AVAIL = 1 << 7;
const USED = 1 << 15;
const WRITE = 2;
const W = 0x8000; // wrap counter 1
const PACKED: Features = { eventIdx: false, indirect: false, notifyOnEmpty: false, packed: true };

const errorCases: Record<string, Case> = {
  // §2.8.6: every descriptor of a list is marked available; the one after a NEXT never was.
  DESC_NOT_AVAILABLE: breaks('DESC_NOT_AVAILABLE', [
    { op: 'raw', addr: 0x3000n, len: 10, flags: NEXT, next: 0 },
    publish,
  ]),
  // The chain runs over the ring's end: its second descriptor (position 0) carries the bits of
  // the lap before (wrap counter 1) where the device expects wrap counter 0.
  DESC_NOT_AVAILABLE_across_the_wrap: breaks(
    'DESC_NOT_AVAILABLE',
    [
      { op: 'raw', addr: 0x3000n, len: 10, flags: NEXT, next: 0 },
      { op: 'raw', addr: 0x3100n, len: 10, flags: 0, next: 0, later: true, wrongWrap: true },
      publish,
    ],
    { start: W | (NUM - 1) },
  ),
  // §2.8.13.2: "A driver MUST NOT create a descriptor list longer than the Queue Size": the
  // 17th descriptor of a 16-entry ring is the list's own first, still of the earlier lap.
  DESC_NOT_AVAILABLE_list_longer_than_the_ring: breaks('DESC_NOT_AVAILABLE', [
    { op: 'chain', descs: Array.from({ length: NUM + 1 }, (_, k) => d(0x3000n + BigInt(k * 16), 10)) },
    publish,
  ]),
  // §2.8.6: the buffer id names one of the driver's buffers: below the queue size.
  ID_OUT_OF_RANGE: breaks('ID_OUT_OF_RANGE', [{ op: 'raw', addr: 0x3000n, len: 10, flags: 0, next: NUM }, publish]),
  // §2.8.7: the table holds len / 16 descriptors: a whole number, at least one.
  INDIRECT_BAD_LEN: breaks('INDIRECT_BAD_LEN', [{ op: 'indirect', descs: [d(0x3000n, 10)], tableLen: 24 }, publish], {
    feat: { indirect: true },
  }),
  INDIRECT_BAD_LEN_zero: breaks(
    'INDIRECT_BAD_LEN',
    [{ op: 'indirect', descs: [d(0x3000n, 10)], tableLen: 0 }, publish],
    { feat: { indirect: true } },
  ),
  // §2.8.13.4: "A driver MUST NOT write direct descriptors with VIRTQ_DESC_F_INDIRECT set in a
  // scatter-gather list linked by VIRTQ_DESC_F_NEXT": with NEXT itself...
  INDIRECT_NESTED: breaks('INDIRECT_NESTED', [{ op: 'indirect', descs: [d(0x3000n, 10)], extraFlags: NEXT }, publish], {
    feat: { indirect: true },
  }),
  // ...or as a later descriptor of a list.
  INDIRECT_NESTED_later_in_a_list: breaks(
    'INDIRECT_NESTED',
    [
      { op: 'raw', addr: 0x3000n, len: 10, flags: NEXT, next: 0 },
      { op: 'raw', addr: 0x1000n, len: 16, flags: INDIRECT, next: 0, later: true },
      publish,
    ],
    { feat: { indirect: true } },
  ),
  INDIRECT_NOT_NEGOTIATED: breaks('INDIRECT_NOT_NEGOTIATED', [{ op: 'indirect', descs: [d(0x3000n, 10)] }, publish]),
  ADDR_OUT_OF_MEMORY: breaks('ADDR_OUT_OF_MEMORY', [{ op: 'chain', descs: [d(HOLE, 10)] }, publish]),
  ADDR_OUT_OF_MEMORY_past_the_end: breaks('ADDR_OUT_OF_MEMORY', [
    { op: 'chain', descs: [d(DATA_HI - 8n, 16)] },
    publish,
  ]),
  ZERO_LEN: breaks('ZERO_LEN', [{ op: 'chain', descs: [d(0x3000n, 0)] }, publish]),
  READABLE_AFTER_WRITABLE: breaks('READABLE_AFTER_WRITABLE', [
    { op: 'chain', descs: [d(0x3000n, 10, true), d(0x3100n, 10)] },
    publish,
  ]),
  READABLE_AFTER_WRITABLE_in_an_indirect_table: breaks(
    'READABLE_AFTER_WRITABLE',
    [{ op: 'indirect', descs: [d(0x3000n, 10, true), d(0x3100n, 10)] }, publish],
    { feat: { indirect: true } },
  ),
  CHAIN_TOO_LONG: breaks(
    'CHAIN_TOO_LONG',
    [{ op: 'chain', descs: [d(GPA_B, 0xffffffff, true), d(GPA_B, 1, true)] }, publish],
    { opts: { regionBSize: 1n << 33n } },
  ),
  // §2.8.10.1: the descriptor ring is 16-byte aligned.
  RING_ADDR_INVALID: breaks('RING_ADDR_INVALID', [], { opts: { descShift: 8 } }),
  // §2.8.10.1: the event suppression areas are 4-byte aligned.
  RING_ADDR_INVALID_driver_area_misaligned: breaks('RING_ADDR_INVALID', [], { opts: { availShift: 2 } }),
  // A position past the ring (SET_VRING_BASE 0x8000 | 16 on a 16-entry ring).
  RING_ADDR_INVALID_position_past_the_ring: breaks('RING_ADDR_INVALID', [], { start: W | NUM }),
  TOO_MANY_SEGMENTS: breaks(
    'TOO_MANY_SEGMENTS',
    [{ op: 'indirect', descs: Array.from({ length: 1025 }, () => d(0x6000n, 1)) }, publish],
    { feat: { indirect: true } },
  ),
};

const chain1 = (addr: bigint, write = true): Op => ({ op: 'chain', descs: [d(addr, 10, write)] });
const complete1: Op = { op: 'complete', count: 1, lens: [10] };

const outcomeCases: Record<string, Case> = {
  // §2.8.1, §2.8.4: the used descriptor's AVAIL and USED both equal the device wrap counter (1),
  // WRITE says the device wrote data; the buffer id comes back, with the length written.
  'a chain is used in place of its first descriptor: id, length, AVAIL|USED|WRITE': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 100), d(0x3100n, 200, true)] },
      publish,
      pop,
      { op: 'complete', count: 1, lens: [150] },
    ],
    expect: {
      popped: [[0]],
      used: [{ id: 0, len: 150 }],
      usedFlags: [AVAIL | USED | WRITE],
      notify: [true],
      state: { lastAvailIdx: W | 2, usedIdx: W | 2, broken: false },
    },
  },
  // §2.8.4: "In a used descriptor, [WRITE] is used to specify whether any data has been written".
  'nothing written: no WRITE in the used descriptor': {
    ops: [chain1(0x3000n, false), publish, pop, { op: 'complete', count: 1, lens: [0] }],
    expect: { used: [{ id: 0, len: 0 }], usedFlags: [AVAIL | USED] },
  },
  // §2.8.6: "The device only writes out a single used descriptor for the whole list. It then
  // skips forward according to the number of descriptors in the list."
  'lists of 3 and 1 descriptors: used at positions 0 and 3': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10), d(0x3100n, 10, true), d(0x3200n, 10, true)] },
      chain1(0x3300n),
      publish,
      pop,
      { op: 'complete', count: 2, lens: [20, 10] },
    ],
    expect: {
      popped: [[0, 1]],
      used: [
        { id: 0, len: 20 },
        { id: 1, len: 10 },
      ],
      state: { lastAvailIdx: W | 4, usedIdx: W | 4 },
    },
  },
  // §2.8.1: both wrap counters flip at the ring's end; the used descriptor written after it
  // carries wrap counter 0 (AVAIL and USED clear).
  'a list across the ring end, and the wrap counters after it': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10, true), d(0x3100n, 10, true)] },
      { op: 'chain', descs: [d(0x3200n, 10, true), d(0x3300n, 10, true)] },
      publish,
      pop,
      { op: 'complete', count: 2, lens: [20, 20] },
    ],
    start: W | (NUM - 1),
    expect: {
      popped: [[0, 1]],
      used: [
        { id: 0, len: 20 },
        { id: 1, len: 20 },
      ],
      usedFlags: [AVAIL | USED | WRITE, WRITE],
      state: { lastAvailIdx: 3, usedIdx: 3, broken: false },
    },
  },
  'an indirect chain takes one slot; flags besides WRITE in its table are ignored (§2.8.7)': {
    ops: [
      { op: 'indirect', descs: [d(0x3000n, 10), d(0x3100n, 20, true)], tableExtraFlags: NEXT | INDIRECT },
      chain1(0x3200n),
      publish,
      pop,
      { op: 'complete', count: 2, lens: [20, 10] },
    ],
    feat: { indirect: true },
    expect: {
      popped: [[0, 1]],
      used: [
        { id: 0, len: 20 },
        { id: 1, len: 10 },
      ],
      state: { lastAvailIdx: W | 2, usedIdx: W | 2, broken: false },
    },
  },
  'a first descriptor not yet made available is not popped': {
    ops: [chain1(0x3000n), pop],
    expect: { popped: [[]], state: { lastAvailIdx: W, broken: false } },
  },
  // §2.8.10: without EVENT_IDX, DISABLE suppresses the interrupt and ENABLE asks for it.
  'driver event DISABLE suppresses, ENABLE interrupts': {
    ops: [
      chain1(0x3000n),
      chain1(0x3100n),
      publish,
      pop,
      { op: 'availFlags', v: 1 },
      complete1,
      { op: 'availFlags', v: 0 },
      complete1,
    ],
    expect: { notify: [false, true] },
  },
  // §2.8.10 with EVENT_IDX: the first interrupt is always sent; then DESC at position 15 wrap 1
  // is passed when used moves from 15 to 0 (wrap 0); DESC at 1 wrap 0 is not reached by the
  // move from 0 to 1; DESC at 1 wrap 0 is passed by the move from 1 to 2.
  'EVENT_IDX: driver event DESC decisions across the wrap': {
    ops: [
      chain1(0x3000n),
      chain1(0x3100n),
      chain1(0x3200n),
      chain1(0x3300n),
      publish,
      pop,
      { op: 'availFlags', v: 2 },
      complete1,
      { op: 'usedEvent', v: W | (NUM - 1) },
      complete1,
      { op: 'usedEvent', v: 1 },
      complete1,
      complete1,
    ],
    feat: { eventIdx: true },
    start: W | (NUM - 2),
    expect: { notify: [true, true, false, true], state: { usedIdx: 2, lastAvailIdx: 2 } },
  },
  'EVENT_IDX: driver event ENABLE still interrupts, DISABLE does not': {
    ops: [chain1(0x3000n), chain1(0x3100n), publish, pop, complete1, { op: 'availFlags', v: 1 }, complete1],
    feat: { eventIdx: true },
    expect: { notify: [true, false] },
  },
  'NOTIFY_ON_EMPTY interrupts an empty ring despite DISABLE': {
    ops: [chain1(0x3000n), publish, { op: 'availFlags', v: 1 }, pop, complete1],
    feat: { notifyOnEmpty: true },
    expect: { notify: [true] },
  },
  // The device event suppression structure: DISABLE while the device works, ENABLE to ask.
  'kicks: device event DISABLE, then ENABLE': {
    ops: [{ op: 'notifyEnable', on: false }],
    expect: { deviceEvent: { offWrap: 0, flags: 1 } },
  },
  'kicks: device event ENABLE': {
    ops: [
      { op: 'notifyEnable', on: false },
      { op: 'notifyEnable', on: true },
    ],
    expect: { deviceEvent: { offWrap: 0, flags: 0 } },
  },
  // With EVENT_IDX a pop asks for a kick at the next position to read; enabling sets DESC.
  'kicks with EVENT_IDX: DESC at the next position to read': {
    ops: [chain1(0x3000n), chain1(0x3100n), publish, pop, { op: 'notifyEnable', on: true }],
    feat: { eventIdx: true },
    start: W | (NUM - 1),
    expect: { deviceEvent: { offWrap: 1, flags: 2 } },
  },
  // A device at work (kicks off) leaves the offset where it was: the driver stops kicking.
  'kicks with EVENT_IDX off: a pop leaves the device event offset behind': {
    ops: [chain1(0x3000n), chain1(0x3100n), publish, { op: 'notifyEnable', on: false }, pop],
    feat: { eventIdx: true },
    start: W | (NUM - 1),
    expect: { deviceEvent: { offWrap: 0, flags: 0 } },
  },
  // §2.8.9 IN_ORDER: one used descriptor for the batch, over its first descriptor, with the id
  // of its last buffer; the driver skips every buffer up to it (3 + 1 + 2 descriptors).
  'IN_ORDER: one used descriptor for a batch of three lists, then the whole batch skipped': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10), d(0x3100n, 10), d(0x3200n, 10)] },
      chain1(0x3300n, false),
      { op: 'chain', descs: [d(0x3400n, 10), d(0x3500n, 10)] },
      publish,
      pop,
      { op: 'complete', count: 3, lens: [0, 0, 0] },
      chain1(0x3600n, false),
      publish,
      pop,
      { op: 'complete', count: 1, lens: [0] },
    ],
    feat: { inOrderBatch: true },
    expect: {
      used: [
        { id: 2, len: 0 },
        { id: 3, len: 0 },
      ],
      usedFlags: [AVAIL | USED, AVAIL | USED],
      state: { lastAvailIdx: W | 7, usedIdx: W | 7 },
    },
  },
  'rewind gives the last popped chains back, to be read again': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10), d(0x3100n, 10)] },
      chain1(0x3200n),
      publish,
      { op: 'pop', max: 2 },
      { op: 'rewind' },
      pop,
    ],
    expect: {
      popped: [
        [0, 1],
        [0, 1],
      ],
      state: { lastAvailIdx: W | 3, broken: false },
    },
  },
};

describe('packed ring known answers (TS reference and C++, each held to the answer)', () => {
  it('covers every walk error a packed ring can raise', () => {
    const covered = new Set(Object.values(errorCases).map((c) => c.expect.error));
    // Split-only: no avail index (AVAIL_IDX_JUMP), no head or next indexes (HEAD_/NEXT_OUT_OF_
    // RANGE, DESC_LOOP: a packed list is walked in ring order, and one that loops over the
    // ring's end shows as DESC_NOT_AVAILABLE). MEMORY_FAULT: test/memory-pulled.test.ts.
    const splitOnly = ['OK', 'MEMORY_FAULT', 'AVAIL_IDX_JUMP', 'HEAD_OUT_OF_RANGE', 'NEXT_OUT_OF_RANGE', 'DESC_LOOP'];
    expect([...covered].sort()).toEqual(ringErrorNames.filter((n) => !splitOnly.includes(n)).sort());
  });
  describe.each([false, true])('with the ring trace %s', (trace) => {
    it.each(Object.entries({ ...errorCases, ...outcomeCases }))('%s', (_name, c) => {
      checkCase(c, PACKED, W, trace);
    });
  });
});

describe('the dirty log of a packed ring', () => {
  const complete: Op = { op: 'complete', count: 1, lens: [100] };
  it('a completion marks the descriptor ring page (page 0), not log_guest_addr', () => {
    const got = runSequence([{ op: 'chain', descs: [d(0x2000n, 100, true)] }, publish, pop, complete], PACKED, W);
    expect(got.log?.[0]).toBe(1);
    expect([...(got.log ?? [])].filter((b, i) => i !== 0 && b !== 0)).toEqual([]);
  });
  it('logging off: no marks', () => {
    const got = runSequence(
      [{ op: 'chain', descs: [d(0x2000n, 100, true)] }, publish, pop, complete],
      PACKED,
      W,
      false,
      {
        noLog: true,
      },
    );
    expect([...(got.log ?? [1])].every((b) => b === 0)).toBe(true);
  });
});

// --- differential -------------------------------------------------------------------------

const addr = addrArb;
const descs = descsArb;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: descs.map((x) => ({ op: 'chain' as const, descs: x })) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('indirect' as const),
      descs,
      tableLen: fc.option(fc.integer({ min: 0, max: 96 }), { nil: undefined, freq: 5 }),
      extraFlags: fc.option(fc.constantFrom(1, 4), { nil: undefined, freq: 6 }),
      tableExtraFlags: fc.option(fc.constantFrom(1, 4, 5), { nil: undefined, freq: 4 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('raw' as const),
      addr,
      len: fc.integer({ min: 0, max: 2000 }),
      flags: fc.integer({ min: 0, max: 7 }),
      next: fc.integer({ min: 0, max: NUM + 2 }),
      wrongWrap: fc.boolean(),
      later: fc.boolean(),
    }),
  },
  { weight: 5, arbitrary: fc.constant({ op: 'publish' as const }) },
  ...deviceSteps(3),
);
const features = fc.record({
  eventIdx: fc.boolean(),
  indirect: fc.boolean(),
  notifyOnEmpty: fc.boolean(),
  packed: fc.constant(true),
  inOrderBatch: fc.boolean(),
});
const RUNS = Number(process.env.VUN_DIFF_RUNS ?? 5000);

describe('packed ring: TS reference vs C++ fast path', () => {
  it(`agrees on ${RUNS} random operation sequences`, () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 1, maxLength: 40 }),
        features,
        fc.constantFrom(W, W | 7, NUM - 2, W | (NUM - 1)),
        fc.boolean(),
        (ops, feat, start, trace) => {
          runSequence(ops, feat, start, trace);
        },
      ),
      { numRuns: RUNS, seed: process.env.VUN_DIFF_SEED ? Number(process.env.VUN_DIFF_SEED) : undefined },
    );
  }, 600_000);
});
