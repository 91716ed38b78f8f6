/**
 * The native fuzz targets (native/fuzz/, scripts/fuzz.mjs) as part of the suite: each is built
 * with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer (Debian clang-19) and run for
 * VUN_FUZZ_SECONDS (default 20; CI gives 60) from its committed seeds. A crash, a sanitizer
 * report or a broken invariant fails the test with the fuzzer's report; the crashing input is
 * left in build/fuzz/. Long runs: `npm run fuzz -- TARGET SECONDS` (docs/reliability.md).
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script without types
import { run, targets } from '../scripts/fuzz.mjs';

const SECONDS = Number(process.env.VUN_FUZZ_SECONDS ?? 20);
type Result = { target: string; execs: number; coverage: number; crashed: boolean; output: string };

describe('native fuzz targets (libFuzzer + ASan + UBSan)', () => {
  const list = (targets as () => string[])();
  it('covers the parsers the reliability note names', () => {
    expect(list).toEqual(['flow', 'guest_memory', 'net_rules', 'observe', 'packed_ring', 'receive', 'split_ring']);
  });
  it.each(list)(
    `%s runs ${SECONDS} s without a crash`,
    (target) => {
      const r = (run as (t: string, s: number) => Result)(target, SECONDS);
      console.log(`fuzz ${target}: ${r.execs} executions in ${SECONDS} s, coverage ${r.coverage}`);
      expect(r.crashed, r.output.split('\n').slice(-60).join('\n')).toBe(false);
      expect(r.execs).toBeGreaterThan(1000);
    },
    (SECONDS + 120) * 1000,
  );
});
