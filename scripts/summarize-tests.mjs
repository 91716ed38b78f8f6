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
// Each failed test's name and the start of its message, printed just above the closing line:
// a CI log is often read from its end, and the message (with the figures a guest test puts in
// it) is what says why.
const failures = [];
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
      else if (t.status === 'failed') {
        f++;
        const message = (t.failureMessages ?? []).join('\n').replace(/\x1b\[[0-9;]*m/g, '');
        failures.push(
          `${suite.name.replace(/^.*?\/(test|guest-tests)\//, '$1/')} > ${t.fullName}\n${message.slice(0, 3000)}`,
        );
      } else s++;
    }
  }
  if (files.length > 1) console.log(`${file}: ${p} passed, ${f} failed${s ? `, ${s} skipped` : ''}`);
  passed += p;
  failed += f;
  skipped += s;
}
for (const [i, f] of failures.entries()) console.log(`--- failed ${i + 1} of ${failures.length}: ${f}`);
if (staticFailed === '1') {
  console.log('static checks (typecheck/lint) failed: counted as one failure');
  failed++;
}
const total = passed + failed;
if (total === 0) console.log('no test ran');
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || skipped > 0 || total === 0 ? 1 : 0);
