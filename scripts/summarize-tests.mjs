// Reads vitest's JSON reports and prints the closing line "N passed, N failed" (CI reads it).
// Skipped or todo tests are not passes: they are reported, and a run with any fails.
//
//   node scripts/summarize-tests.mjs STATIC_FAILED(0|1) REPORT.json [REPORT.json ...]
//
// Each report is one phase of the suite (the whole suite; the ASan run); a missing report is a
// phase that crashed before its tests ran, and counts as a failure.
import { existsSync, readFileSync } from 'node:fs';

const [staticFailed = '0', ...files] = process.argv.slice(2);
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of files) {
  if (!existsSync(file)) {
    console.log(`${file}: vitest wrote no report: that run crashed before tests ran`);
    failed++;
    continue;
  }
  const r = JSON.parse(readFileSync(file, 'utf8'));
  let p = 0;
  let f = 0;
  let s = 0;
  for (const suite of r.testResults ?? []) {
    if ((suite.assertionResults ?? []).length === 0 && suite.status === 'failed') {
      // A file that failed to load: count it as a failure, loudly.
      console.log(`FAILED TO LOAD: ${suite.name}\n${suite.message ?? ''}`);
      f++;
    }
    for (const t of suite.assertionResults ?? []) {
      if (t.status === 'passed') p++;
      else if (t.status === 'failed') f++;
      else s++;
    }
  }
  if (files.length > 1) console.log(`${file}: ${p} passed, ${f} failed${s ? `, ${s} skipped` : ''}`);
  passed += p;
  failed += f;
  skipped += s;
}
if (staticFailed === '1') {
  console.log('static checks (typecheck/lint) failed: counted as one failure');
  failed++;
}
const total = passed + failed;
if (total === 0) console.log('no test ran');
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || skipped > 0 || total === 0 ? 1 : 0);
