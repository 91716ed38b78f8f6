#!/usr/bin/env bash
# npm ci when node_modules is missing or older than the lock file; then builds addon and TS.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund
fi
npm run --silent build
