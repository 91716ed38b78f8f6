/** The suite's closing line (scripts/summarize-tests.mjs): counts, the failure digest, the exit code. */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';
import { tempDir } from './helpers/harness.js';

const script = join(packageRoot, 'scripts', 'summarize-tests.mjs');

function summarize(report: unknown): { out: string; status: number | null } {
  const t = tempDir();
  try {
    const file = join(t.dir, 'report.json');
    writeFileSync(file, JSON.stringify(report));
    const r = spawnSync(process.execPath, [script, '0', file], { encoding: 'utf8' });
    return { out: r.stdout, status: r.status };
  } finally {
    t.cleanup();
  }
}

const passing = { status: 'passed', fullName: 'a passing test', failureMessages: [] };

describe('summarize-tests', () => {
  it("repeats each failed test's name and message just above the closing line", () => {
    const { out, status } = summarize({
      testResults: [
        {
          name: '/somewhere/main/guest-tests/migration.test.ts',
          status: 'failed',
          assertionResults: [
            passing,
            {
              status: 'failed',
              fullName: 'live migration completes',
              failureMessages: [
                'AssertionError: {"pingsSent":300,"pingsAnswered":200}\x1b[31m expected 200 to be > 240',
              ],
            },
          ],
        },
      ],
    });
    const lines = out.trimEnd().split('\n');
    expect(status).toBe(1);
    expect(lines.at(-1)).toBe('1 passed, 1 failed');
    expect(out).toContain('--- failed 1 of 1: guest-tests/migration.test.ts > live migration completes\n');
    // The figures in the message reach the log's tail, without terminal colour codes.
    expect(lines.at(-2)).toBe('AssertionError: {"pingsSent":300,"pingsAnswered":200} expected 200 to be > 240');
  });

  it('prints no digest when everything passed', () => {
    const { out, status } = summarize({
      testResults: [{ name: '/x/test/a.test.ts', status: 'passed', assertionResults: [passing, passing] }],
    });
    expect(status).toBe(0);
    expect(out).not.toContain('--- failed');
    expect(out.trimEnd()).toBe('2 passed, 0 failed');
  });
});
