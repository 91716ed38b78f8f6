#!/usr/bin/env bash
# The full test suite: host packages, dependencies, build, static checks, then every test
# (unit, native, integration, interop with dpdk-testpmd, real QEMU). Ends with the line
# "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh || exit 1
bash scripts/ensure-node-deps.sh || exit 1

static_failed=0
if ! npm run --silent typecheck; then echo "typecheck failed"; static_failed=1; fi
if ! npm run --silent lint; then echo "lint failed"; static_failed=1; fi

mkdir -p .test-results
rm -f .test-results/vitest.json .test-results/fault-scorecard.jsonl
npx vitest run --reporter=default --reporter=json --outputFile.json=.test-results/vitest.json "$@"
# The fault suite's results become docs/fault-scorecard.md (when the guest fault tests ran).
[ -f .test-results/fault-scorecard.jsonl ] && node scripts/fault-scorecard.mjs
node scripts/summarize-tests.mjs .test-results/vitest.json "$static_failed"
