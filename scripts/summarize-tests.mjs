// Reads vitest's JSON report and prints the closing line "N passed, N failed" (CI reads it).
// Skipped or todo tests are not passes: they are reported, and a run with any fails.
import { existsSync, readFileSync } from 'node:fs';

const [file, staticFailed = '0'] = process.argv.slice(2);
if (!file || !existsSync(file)) {
  console.log('vitest wrote no report: the run crashed before tests ran');
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const r = JSON.parse(readFileSync(file, 'utf8'));
let passed = 0;
let failed = 0;
let skipped = 0;
for (const suite of r.testResults ?? []) {
  if ((suite.assertionResults ?? []).length === 0 && suite.status === 'failed') {
    // A file that failed to load: count it as a failure, loudly.
    console.log(`FAILED TO LOAD: ${suite.name}\n${suite.message ?? ''}`);
    failed++;
  }
  for (const t of suite.assertionResults ?? []) {
    if (t.status === 'passed') passed++;
    else if (t.status === 'failed') failed++;
    else skipped++;
  }
}
if (staticFailed === '1') {
  console.log('static checks (typecheck/lint) failed: counted as one failure');
  failed++;
}
const total = passed + failed;
if (total === 0) console.log('no test ran');
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || skipped > 0 || total === 0 ? 1 : 0);
