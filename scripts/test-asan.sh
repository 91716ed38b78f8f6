#!/usr/bin/env bash
# The native, data-path and bad-input tests against the addon built with AddressSanitizer and
# UndefinedBehaviorSanitizer (scripts/build-asan.mjs). Any sanitizer report aborts the test
# process, which fails the run. Extra arguments go to vitest (e.g. --reporter=json ...).
set -uo pipefail
cd "$(dirname "$0")/.."
node scripts/build-asan.mjs || exit 1
runtime=$(clang++-19 -print-file-name=libclang_rt.asan-x86_64.so)
if [ ! -f "$runtime" ]; then
  echo "test-asan: no ASan runtime at '$runtime' (Debian: apt-get install libclang-rt-19-dev)" >&2
  exit 1
fi
# node is not instrumented: the runtime is preloaded. Leaks are not checked (node keeps memory
# to the end on purpose); the fault handler of memory_fault.h keeps SIGBUS (handle_sigbus=0).
export LD_PRELOAD="$runtime"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allow_user_segv_handler=1:handle_sigbus=0:detect_odr_violation=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export VUN_NATIVE_ADDON="$PWD/build/asan/vhost_user_net.node"
exec npx vitest run \
  test/sanitized.test.ts \
  test/native.test.ts \
  test/datapath.test.ts \
  test/bad-input.test.ts \
  test/protocol.test.ts \
  test/ring-known-answers.test.ts \
  test/ring-differential.test.ts \
  test/packed-ring.test.ts \
  test/packed-device.test.ts \
  test/memory-pulled.test.ts \
  test/isolation.test.ts \
  test/control-fuzz.test.ts \
  test/memory-seals.test.ts \
  test/dirty-log.test.ts \
  test/faults.test.ts \
  test/capture.test.ts \
  test/ring-trace.test.ts \
  test/host-ports.test.ts \
  "$@"
