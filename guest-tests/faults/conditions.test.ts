/**
 * The fault conditions matrix on real Linux guests: Debian 12's 6.1 and bookworm's 6.12 cloud
 * kernels, every condition on the ring layouts the catalog gives it (src/conditions/catalog.ts:
 * 24 on split rings, 9 on packed), run by the product's own runner (runConditions, as
 * `vhost-user-net conditions` runs it) two guests at a time. Each cell must be expected or a
 * documented finding for its kernel. The matrix is kept in .test-results/conditions.json
 * (scripts/fault-scorecard.mjs writes docs/fault-scorecard.md from it).
 *
 * VUN_FAULTS_CONTROL=1 runs every cell with an empty plan: each must then be unexpected (the
 * run shows the reactions are the plans'; it writes no scorecard).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { matrixCells, runConditions, type ConditionResult } from '../../src/conditions/runner.js';
import { toJson } from '../../src/conditions/report.js';
import type { KernelSpec } from '../../src/guest/kernels.js';
import { packageRoot } from '../../src/native.js';
import type { Ring } from '../../src/conditions/catalog.js';

const KERNELS: KernelSpec[] = [{ package: 'linux-image-cloud-amd64' }, { package: 'linux-image-6.12-cloud-amd64' }];
const RINGS: Ring[] = ['split', 'packed'];
const control = process.env.VUN_FAULTS_CONTROL === '1';
const cells = matrixCells(KERNELS, RINGS);
const key = (label: string, ring: string, row: number) => `${label} ${ring} row ${row}`;

// Started on first use; each test waits for its own cell (they finish roughly in order).
const waiting = new Map<string, (r: ConditionResult) => void>();
const results = new Map<string, Promise<ConditionResult>>(
  cells.map((c) => [
    key(c.kernel, c.ring, c.row),
    new Promise((res) => waiting.set(key(c.kernel, c.ring, c.row), res)),
  ]),
);
let started: Promise<void> | undefined;
function start(): Promise<void> {
  started ??= runConditions({
    kernels: KERNELS,
    rings: RINGS,
    jobs: 2,
    control,
    onResult: (r) => waiting.get(key(r.kernelLabel, r.ring, r.row))?.(r),
  }).then((report) => {
    if (control) return;
    mkdirSync(join(packageRoot, '.test-results'), { recursive: true });
    writeFileSync(join(packageRoot, '.test-results', 'conditions.json'), toJson(report));
  });
  // A runner that throws fails every test still waiting, with its error.
  started = started.catch((err: Error) => {
    for (const c of cells) {
      waiting.get(key(c.kernel, c.ring, c.row))?.({
        row: c.row,
        ring: c.ring,
        kernel: c.kernel,
        kernelLabel: c.kernel,
        verdict: 'error',
        signatures: [],
        observed: '',
        evidence: {},
        expected: { verdict: 'expected', signatures: [] },
        reasons: [`runner: ${err.message}`],
        faults: 0,
        seconds: 0,
      });
    }
  });
  return started;
}

describe('fault conditions on Linux guests (6.1, 6.12; split and packed rings; C++ data path, TAP)', () => {
  it.each(cells)(
    '$kernel, $ring rings, row $row',
    async (c) => {
      void start();
      const r = await (results.get(key(c.kernel, c.ring, c.row)) as Promise<ConditionResult>);
      const ctx = `${r.kernel} ${r.ring} row ${r.row}: ${r.verdict} [${r.signatures?.join(', ')}]\nreasons: ${r.reasons?.join('; ')}\nobserved: ${r.observed}\nevidence: ${JSON.stringify(r.evidence)}`;
      if (control) {
        expect(r.verdict, `without its plan the reaction still showed\n${ctx}`).toBe('unexpected');
        expect(r.reasons.join('; '), ctx).not.toMatch(/^runner:/);
        return;
      }
      expect(['expected', 'finding'], ctx).toContain(r.verdict);
    },
    1_500_000,
  );
});
