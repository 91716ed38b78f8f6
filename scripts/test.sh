#!/usr/bin/env bash
# The full test suite: host packages, dependencies, build, static checks, then every test
# (unit, native, integration, interop with dpdk-testpmd, real QEMU), then the native, data-path
# and bad-input tests again against the addon built with ASan + UBSan (scripts/test-asan.sh).
# Ends with the line "N passed, N failed" over both runs.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh || exit 1
bash scripts/ensure-node-deps.sh || exit 1

static_failed=0
if ! npm run --silent typecheck; then echo "typecheck failed"; static_failed=1; fi
if ! npm run --silent lint; then echo "lint failed"; static_failed=1; fi

mkdir -p .test-results
rm -f .test-results/vitest.json .test-results/vitest-asan.json .test-results/conditions.json
npx vitest run --reporter=default --reporter=json --outputFile.json=.test-results/vitest.json "$@"
# The fault suite's results become docs/fault-scorecard.md (when the guest fault tests ran).
[ -f .test-results/conditions.json ] && node scripts/fault-scorecard.mjs
reports=(.test-results/vitest.json)
# With a file filter ("npm test -- test/x.test.ts") only that runs; the ASan run is the whole
# suite's second phase.
if [ $# -eq 0 ]; then
  echo "--- the same native, data-path and bad-input tests under ASan + UBSan ---"
  bash scripts/test-asan.sh --reporter=default --reporter=json --outputFile.json=.test-results/vitest-asan.json
  reports+=(.test-results/vitest-asan.json)
fi
node scripts/summarize-tests.mjs "$static_failed" "${reports[@]}"
