/**
 * Each input under native/fuzz/regressions/TARGET/ once crashed its fuzz target or broke one of
 * its invariants; replayed here through the target as built from today's code (ASan, UBSan and
 * the target's own checks on), each must run clean. native/fuzz/regressions/README.md says
 * what each one found.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script, no types
import { build, targets } from '../scripts/fuzz.mjs';

const dir = join(import.meta.dirname, '..', 'native', 'fuzz', 'regressions');
const cases = (targets() as string[]).flatMap((t) => {
  let files: string[] = [];
  try {
    files = readdirSync(join(dir, t));
  } catch {
    /* no regressions for this target */
  }
  return files.map((f) => [t, f] as const);
});

describe('fuzz regressions', () => {
  it('there are some (a missing directory would silently replay nothing)', () => {
    expect(cases.length).toBeGreaterThanOrEqual(3);
  });

  it.each(cases)(
    '%s: %s runs clean',
    (target, file) => {
      const bin = build(target) as string;
      const r = spawnSync(bin, [join(dir, target, file)], {
        encoding: 'utf8',
        env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1', UBSAN_OPTIONS: 'print_stacktrace=1' },
      });
      const output = `${r.stdout}${r.stderr}`;
      expect(output, output.split('\n').slice(-30).join('\n')).toMatch(/Executed .* in \d+ ms/);
      expect(r.status, output.split('\n').slice(-30).join('\n')).toBe(0);
    },
    120_000,
  );
});
