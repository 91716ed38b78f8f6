#!/usr/bin/env bash
# The main job: set up what is missing, build, and run the demo (a Linux guest on the backend).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/ensure-node-deps.sh
node bin/vhost-user-net.js demo "$@"
