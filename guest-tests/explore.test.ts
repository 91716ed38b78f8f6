/**
 * `vhost-user-net explore` end to end on Debian 12's 6.1 guest: two minutes of generated plans
 * on one guest kept between plans, a signature found, minimized and confirmed by replays, the
 * output directory as documented, then the same run resumed from that directory.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';
import type { ExploreState } from '../src/explore/types.js';
import { tempDir } from '../test/helpers/harness.js';

const bin = join(packageRoot, 'bin', 'vhost-user-net.js');
const tmp = tempDir('vun-explore-e2e-');
afterAll(() => tmp.cleanup());

function explore(minutes: number): { status: number | null; err: string } {
  const r = spawnSync(
    process.execPath,
    [
      bin,
      'explore',
      '--kernel-package',
      'linux-image-cloud-amd64',
      '--minutes',
      String(minutes),
      '--seed',
      '11',
      '--max-replays',
      '6',
      '--out',
      tmp.dir,
    ],
    { encoding: 'utf8', timeout: 600_000 },
  );
  return { status: r.status, err: r.stderr };
}

describe('explore (6.1 guest)', () => {
  it(
    'runs two minutes of plans on a kept guest, and minimizes and confirms what it finds',
    { timeout: 660_000 },
    () => {
      const r = explore(2);
      expect(r.status, r.err).toBe(0);
      const st = JSON.parse(readFileSync(join(tmp.dir, 'state.json'), 'utf8')) as ExploreState;
      const doc = JSON.parse(readFileSync(join(tmp.dir, 'signatures.json'), 'utf8'));
      expect(doc.plansRun).toBe(st.plansRun);
      expect(doc.kernel.release).toMatch(/^6\.1\./);
      expect(st.plansRun).toBeGreaterThanOrEqual(3);
      // A guest is kept between plans: fewer boots than rounds.
      expect(st.reboots).toBeLessThan(st.plansRun + st.replays);
      const plans = readFileSync(join(tmp.dir, 'plans.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(plans).toHaveLength(st.plansRun);
      expect(plans.some((p) => p.faults > 0)).toBe(true);
      // Seed 11's third plan corrupts csum_start on the receiveq: checksum errors in the guest.
      const found = doc.signatures.filter((s: { status: string }) => s.status === 'minimized');
      expect(found.length, r.err).toBeGreaterThanOrEqual(1);
      for (const s of found) {
        expect(s.plan.rules.length).toBeLessThanOrEqual(s.original.plan.rules.length);
        expect(s.replayed).toBeGreaterThanOrEqual(1);
        for (const f of Object.values(s.files) as string[]) expect(existsSync(join(tmp.dir, f)), f).toBe(true);
        expect(JSON.parse(readFileSync(join(tmp.dir, s.files.plan), 'utf8'))).toEqual(s.plan);
      }
      expect(readFileSync(join(tmp.dir, 'report.md'), 'utf8')).toContain(
        `| ${found[0].id} | ${found[0].signatures.join(', ')} |`,
      );
      expect(r.err).toMatch(/explore: \d+ plans in [\d.]+ min \([\d.]+ a minute/);
    },
  );

  it('resumes from its directory: plan numbers go on, the minutes are the whole run', { timeout: 660_000 }, () => {
    const before = JSON.parse(readFileSync(join(tmp.dir, 'state.json'), 'utf8')) as ExploreState;
    const r = explore(before.elapsedMs / 60_000 + 0.4);
    expect(r.status, r.err).toBe(0);
    expect(r.err).toMatch(/resuming at plan \d+/);
    const after = JSON.parse(readFileSync(join(tmp.dir, 'state.json'), 'utf8')) as ExploreState;
    expect(after.nextIndex).toBeGreaterThan(before.nextIndex);
    expect(after.plansRun).toBeGreaterThan(before.plansRun);
    expect(after.found.slice(0, before.found.length).map((f) => f.key)).toEqual(before.found.map((f) => f.key));
    // A run with another seed is refused, not mixed into this one.
    const other = spawnSync(process.execPath, [bin, 'explore', '--seed', '12', '--minutes', '1', '--out', tmp.dir], {
      encoding: 'utf8',
    });
    expect(other.status).toBe(2);
    expect(other.stderr).toMatch(/another seed \(11\)/);
  });
});
