/**
 * Known answers for the split ring: what the virtio spec says must happen, written down case
 * by case, and checked against both ring implementations (each case runs the TS reference and
 * the C++ ring over the same bytes; see helpers/ring-pair.ts). A differential test alone cannot
 * catch a misreading both rings share; these can. One case per ring error code, and the
 * notable outcomes: used entries, notification decisions (flags, NOTIFY_ON_EMPTY, EVENT_IDX
 * at the 16-bit wrap), rewinding.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ringErrorNames } from '../src/virtio/ring-errors.js';
import { breaks, type Case, checkCase, d, pop, publish } from './helpers/ring-cases.js';
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

const errorCases: Record<string, Case> = {
  // §2.7.13.3: idx moves forward by at most the queue size past what the device read.
  AVAIL_IDX_JUMP: breaks('AVAIL_IDX_JUMP', [
    { op: 'chain', descs: [d(0x3000n, 10)] },
    { op: 'publish', jump: NUM + 1 },
  ]),
  HEAD_OUT_OF_RANGE: breaks('HEAD_OUT_OF_RANGE', [{ op: 'offer', head: NUM }, publish]),
  NEXT_OUT_OF_RANGE: breaks('NEXT_OUT_OF_RANGE', [
    { op: 'raw', addr: 0x3000n, len: 10, flags: NEXT, next: NUM + 1 },
    publish,
  ]),
  DESC_LOOP: breaks('DESC_LOOP', [{ op: 'raw', addr: 0x3000n, len: 10, flags: NEXT, next: 0 }, publish]),
  // §2.7.5.3.1: an indirect table's length is a multiple of 16, and not 0.
  INDIRECT_BAD_LEN: breaks('INDIRECT_BAD_LEN', [{ op: 'indirect', descs: [d(0x3000n, 10)], tableLen: 24 }, publish], {
    feat: { indirect: true },
  }),
  INDIRECT_BAD_LEN_zero: breaks(
    'INDIRECT_BAD_LEN',
    [{ op: 'indirect', descs: [d(0x3000n, 10)], tableLen: 0 }, publish],
    {
      feat: { indirect: true },
    },
  ),
  // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag and the
  // VIRTQ_DESC_F_NEXT flag in one descriptor."
  INDIRECT_NESTED: breaks('INDIRECT_NESTED', [{ op: 'indirect', descs: [d(0x3000n, 10)], extraFlags: NEXT }, publish], {
    feat: { indirect: true },
  }),
  INDIRECT_NOT_NEGOTIATED: breaks('INDIRECT_NOT_NEGOTIATED', [{ op: 'indirect', descs: [d(0x3000n, 10)] }, publish]),
  ADDR_OUT_OF_MEMORY: breaks('ADDR_OUT_OF_MEMORY', [{ op: 'chain', descs: [d(HOLE, 10)] }, publish]),
  ADDR_OUT_OF_MEMORY_past_the_end: breaks('ADDR_OUT_OF_MEMORY', [
    { op: 'chain', descs: [d(DATA_HI - 8n, 16)] },
    publish,
  ]),
  ZERO_LEN: breaks('ZERO_LEN', [{ op: 'chain', descs: [d(0x3000n, 0)] }, publish]),
  // §2.7.4.2: device-writable descriptors come after all device-readable ones.
  READABLE_AFTER_WRITABLE: breaks('READABLE_AFTER_WRITABLE', [
    { op: 'chain', descs: [d(0x3000n, 10, true), d(0x3100n, 10)] },
    publish,
  ]),
  // 0xffffffff + 1 bytes: over what a used element's u32 len can report.
  CHAIN_TOO_LONG: breaks(
    'CHAIN_TOO_LONG',
    [{ op: 'chain', descs: [d(GPA_B, 0xffffffff, true), d(GPA_B, 1, true)] }, publish],
    { opts: { regionBSize: 1n << 33n } },
  ),
  // §2.7: the descriptor table is 16-byte aligned.
  RING_ADDR_INVALID: breaks('RING_ADDR_INVALID', [], { opts: { descShift: 8 } }),
  // §2.7: the available ring is 2-byte aligned.
  RING_ADDR_INVALID_avail_misaligned: breaks('RING_ADDR_INVALID', [], { opts: { availShift: 1 } }),
  TOO_MANY_SEGMENTS: breaks(
    'TOO_MANY_SEGMENTS',
    [{ op: 'indirect', descs: Array.from({ length: 1025 }, () => d(0x6000n, 1)) }, publish],
    { feat: { indirect: true } },
  ),
};

const outcomeCases: Record<string, Case> = {
  'a chain is popped, used with the length written, and the driver interrupted (flags clear)': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 100), d(0x3100n, 200, true)] },
      publish,
      pop,
      { op: 'complete', count: 1, lens: [150] },
    ],
    expect: {
      popped: [[0]],
      used: [{ id: 0, len: 150 }],
      notify: [true],
      state: { lastAvailIdx: 1, usedIdx: 1, broken: false },
    },
  },
  'a buffer crossing the region edge is one chain': {
    ops: [
      { op: 'chain', descs: [d(GPA_B - 100n, 300), d(0x3000n, 64, true)] },
      publish,
      pop,
      { op: 'complete', count: 1, lens: [64] },
    ],
    expect: { popped: [[0]], used: [{ id: 0, len: 64 }], state: { broken: false } },
  },
  'an indirect chain is walked when negotiated': {
    ops: [
      { op: 'indirect', descs: [d(0x3000n, 10), d(0x3100n, 20, true)] },
      publish,
      pop,
      { op: 'complete', count: 1, lens: [20] },
    ],
    feat: { indirect: true },
    expect: { popped: [[0]], used: [{ id: 0, len: 20 }], state: { broken: false } },
  },
  // §2.7.7: with VIRTQ_AVAIL_F_NO_INTERRUPT set (no EVENT_IDX) the device need not interrupt.
  'NO_INTERRUPT suppresses the interrupt': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10, true)] },
      publish,
      { op: 'availFlags', v: 1 },
      pop,
      { op: 'complete', count: 1, lens: [10] },
    ],
    expect: { notify: [false] },
  },
  // VIRTIO_F_NOTIFY_ON_EMPTY: interrupt when the ring runs empty, whatever the flags say.
  'NOTIFY_ON_EMPTY interrupts an empty ring despite NO_INTERRUPT': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10, true)] },
      publish,
      { op: 'availFlags', v: 1 },
      pop,
      { op: 'complete', count: 1, lens: [10] },
    ],
    feat: { notifyOnEmpty: true },
    expect: { notify: [true] },
  },
  // §2.7.10 vring_need_event across the u16 wrap: the first interrupt is always sent; then
  // used_event 0xffff with used 0xffff -> 0x0000 is crossed (sent); used_event 5 with 0 -> 1
  // is not (suppressed).
  'EVENT_IDX decisions at the 16-bit wrap': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10, true)] },
      { op: 'chain', descs: [d(0x3100n, 10, true)] },
      { op: 'chain', descs: [d(0x3200n, 10, true)] },
      publish,
      pop,
      { op: 'complete', count: 1, lens: [10] },
      { op: 'usedEvent', v: 0xffff },
      { op: 'complete', count: 1, lens: [10] },
      { op: 'usedEvent', v: 5 },
      { op: 'complete', count: 1, lens: [10] },
    ],
    feat: { eventIdx: true },
    start: 0xfffe,
    expect: { popped: [[0, 1, 2]], notify: [true, true, false], state: { usedIdx: 1, lastAvailIdx: 1 } },
  },
  // §2.7.10 avail_event: a pop asks for a kick at the next index while the device wants kicks;
  // a device at work (kicks off) leaves it behind, so the driver stops kicking; turning kicks
  // on asks at avail->idx.
  'EVENT_IDX kicks: avail_event follows pops only while kicks are wanted': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10)] },
      { op: 'chain', descs: [d(0x3100n, 10)] },
      publish,
      { op: 'pop', max: 1 },
      { op: 'notifyEnable', on: false },
      { op: 'pop', max: 1 },
    ],
    feat: { eventIdx: true },
    expect: { availEvent: 1, state: { lastAvailIdx: 2 } },
  },
  'EVENT_IDX kicks: turned on, avail_event is avail->idx': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10)] },
      publish,
      { op: 'notifyEnable', on: false },
      pop,
      { op: 'chain', descs: [d(0x3100n, 10)] },
      publish,
      { op: 'notifyEnable', on: true },
    ],
    feat: { eventIdx: true },
    expect: { availEvent: 2, state: { lastAvailIdx: 1 } },
  },
  // §2.7.9 IN_ORDER: "a single used ring entry with the id corresponding to the head entry of
  // the descriptor chain describing the last buffer in the batch", and used->idx moves by the
  // batch's size. Heads 0, 2, 3 (the first chain takes descriptors 0 and 1).
  'IN_ORDER: one used entry for a batch of three, used->idx moved by three': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10), d(0x3100n, 10)] },
      { op: 'chain', descs: [d(0x3200n, 10)] },
      { op: 'chain', descs: [d(0x3300n, 10)] },
      publish,
      pop,
      { op: 'complete', count: 3, lens: [0, 0, 0] },
    ],
    feat: { inOrderBatch: true },
    expect: { popped: [[0, 2, 3]], used: [{ id: 3, len: 0 }], state: { usedIdx: 3, lastAvailIdx: 3 } },
  },
  'rewind gives the last popped chains back, to be read again': {
    ops: [
      { op: 'chain', descs: [d(0x3000n, 10)] },
      { op: 'chain', descs: [d(0x3100n, 10)] },
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
      state: { lastAvailIdx: 2, broken: false },
    },
  },
};

const NO_FEATURES: Features = { eventIdx: false, indirect: false, notifyOnEmpty: false };

describe('split ring known answers (TS reference and C++, each held to the answer)', () => {
  it('covers every ring error code', () => {
    const covered = new Set(Object.values(errorCases).map((c) => c.expect.error));
    // MEMORY_FAULT is raised by the data plane, not the walk: test/memory-pulled.test.ts.
    // DESC_NOT_AVAILABLE and ID_OUT_OF_RANGE are the packed ring's: test/packed-ring.test.ts.
    const walkErrors = ringErrorNames.filter(
      (n) => !['OK', 'MEMORY_FAULT', 'DESC_NOT_AVAILABLE', 'ID_OUT_OF_RANGE'].includes(n),
    );
    expect([...covered].sort()).toEqual(walkErrors.sort());
  });
  describe.each([false, true])('with the ring trace %s', (trace) => {
    it.each(Object.entries({ ...errorCases, ...outcomeCases }))('%s', (_name, c) => {
      checkCase(c, NO_FEATURES, 0, trace);
    });
  });
});

describe('the dirty log of the used ring (vhost-user.rst "Migration")', () => {
  const chain: Op = { op: 'chain', descs: [d(0x2000n, 100, true)] };
  const complete: Op = { op: 'complete', count: 1, lens: [100] };
  // Used ring writes are logged at log_guest_addr (LOG_USED_AT = 0x100000: page 256, log
  // byte 32, bit 0), not at the used ring's own address (page 0 here).
  const onlyPage256 = (log: Buffer | undefined) => {
    expect(log?.[32]).toBe(1);
    expect([...(log ?? [])].filter((b, i) => i !== 32 && b !== 0)).toEqual([]);
  };
  it('a completion marks the page of log_guest_addr, nothing else', () => {
    const got = runSequence([chain, { op: 'publish' }, pop, complete], NO_FEATURES, 0);
    onlyPage256(got.log);
  });
  it('with EVENT_IDX a pop alone marks it too (avail_event is in the used ring)', () => {
    const got = runSequence([chain, { op: 'publish' }, pop], { ...NO_FEATURES, eventIdx: true }, 0);
    onlyPage256(got.log);
  });
  it('a ring that writes nothing leaves the log clear', () => {
    const got = runSequence([chain, { op: 'publish' }], NO_FEATURES, 0);
    expect([...(got.log ?? [1])].every((b) => b === 0)).toBe(true);
  });
  it('logging off: no marks', () => {
    const got = runSequence([chain, { op: 'publish' }, pop, complete], NO_FEATURES, 0, false, { noLog: true });
    expect([...(got.log ?? [1])].every((b) => b === 0)).toBe(true);
  });
});
