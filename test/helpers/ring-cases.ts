/**
 * What the known-answer and differential tests of both ring layouts share: the case shape and
 * its check (run on both implementations through ring-pair.ts, then held to the answer), and
 * the generators of random descriptors.
 */
import fc from 'fast-check';
import { expect } from 'vitest';
import { RingError } from '../../src/virtio/ring-errors.js';
import type { DescSpec } from './ring-driver.js';
import { DATA_HI, DATA_LO, type Features, GPA_B, HOLE, type Op, type Outcome, runSequence } from './ring-pair.js';

export const d = (addr: bigint, len: number, write = false): DescSpec => ({ addr, len, write });

/**
 * The steps every random ring sequence mixes in beside the driver's own (weighted, for
 * fc.oneof): the device pops, completes, rewinds; the driver moves used_event, its avail flags
 * (values up to `availFlagsMax`) and asks for kicks or not.
 */
export function deviceSteps(availFlagsMax: number) {
  return [
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
    { weight: 1, arbitrary: fc.record({ op: fc.constant('availFlags' as const), v: fc.nat(availFlagsMax) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('notifyEnable' as const), on: fc.boolean() }) },
  ];
}
export const pop: Op = { op: 'pop', max: 8 };
export const publish: Op = { op: 'publish' };

export interface Case {
  ops: Op[];
  feat?: Partial<Features>;
  start?: number;
  opts?: Parameters<typeof runSequence>[4];
  expect: Partial<Omit<Outcome, 'state'>> & { state?: Partial<Outcome['state']> };
}

/** A case for an error: the ring breaks with `error` and returns nothing from that pop. */
export const breaks = (error: keyof typeof RingError, ops: Op[], more: Omit<Case, 'ops' | 'expect'> = {}): Case => ({
  ops: [...ops, pop],
  ...more,
  expect: { error, popped: [[]], state: { broken: true, error: RingError[error] } },
});

/** Runs `c` on both implementations (features over `base`, from `start`) and holds it to its answer. */
export function checkCase(c: Case, base: Features, start: number, trace: boolean): void {
  const got = runSequence(c.ops, { ...base, ...c.feat }, c.start ?? start, trace, c.opts);
  const { state, ...rest } = c.expect;
  expect(got).toMatchObject(rest);
  if (state) expect(got.state).toMatchObject(state);
  if (!c.expect.error) expect(got.error).toBeUndefined();
}

// --- random descriptors -----------------------------------------------------------------

// Mostly well-formed chains (so pops, completions and notifications get exercised), with a
// steady share of every kind of breakage.
export const addrArb = fc.oneof(
  { weight: 30, arbitrary: fc.bigInt(DATA_LO, DATA_HI - 3001n) },
  { weight: 1, arbitrary: fc.bigInt(HOLE, HOLE + 0x1000n) },
  { weight: 1, arbitrary: fc.constant(DATA_HI - 8n) }, // runs off the end of memory
  { weight: 3, arbitrary: fc.constant(GPA_B - 100n) }, // crosses the region edge
);
export const lenArb = fc.oneof(
  { weight: 40, arbitrary: fc.integer({ min: 1, max: 3000 }) },
  { weight: 1, arbitrary: fc.constant(0) },
);
const descArb = fc.record({ addr: addrArb, len: lenArb, write: fc.boolean() });
/** Readable descriptors first (§2.7.4.2, §2.8.13.2) unless the generator breaks that rule. */
export const descsArb = fc
  .tuple(fc.array(descArb, { minLength: 1, maxLength: 5 }), fc.nat(19))
  .map(([ds, r]) => (r === 0 ? ds : [...ds.filter((x) => !x.write), ...ds.filter((x) => x.write)]));
