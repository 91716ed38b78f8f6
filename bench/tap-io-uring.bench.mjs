// Benchmark 13: does io_uring make TAP writes cheaper? Issue 14 asks to measure it and keep it
// only where it wins. bench/tap-io-uring/tap_write.c writes frames into a TAP in a namespace
// made here, one writev per frame (TapPort's way) or the same writevs queued to io_uring and
// submitted once per burst, on one core, alternating. Prints the io_uring/writev cost ratio at
// 64 B (below 1.0: io_uring is cheaper).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { median, root, RUNS, save, SECONDS, spread, tmp } from './lib.mjs';

const ROUNDS = Math.max(RUNS, 5);
const BURST = 64; // the most chains a worker pops at once (kMaxBurst, native/ring_types.h)
const ns = `vun-uring-${process.pid}`;
const t = tmp();
const bin = join(t.dir, 'tap_write');
const cc = spawnSync('gcc', ['-O2', '-o', bin, join(root, 'bench', 'tap-io-uring', 'tap_write.c'), '-luring'], {
  encoding: 'utf8',
});
if (cc.status !== 0) throw new Error(`building tap_write (needs liburing-dev):\n${cc.stderr}`);

function one(mode, size) {
  const r = spawnSync(
    'ip',
    ['netns', 'exec', ns, 'taskset', '-c', '0', bin, mode, String(BURST), String(SECONDS), String(size)],
    {
      encoding: 'utf8',
    },
  );
  if (r.status !== 0) throw new Error(`tap_write ${mode} ${size}: ${r.stderr}`);
  const o = JSON.parse(r.stdout);
  if (o.errors) throw new Error(`tap_write ${mode} ${size}: ${o.errors} writes failed`);
  return { mpps: o.frames / o.seconds / 1e6, cpuNsPerFrame: (o.cpuSeconds * 1e9) / o.frames };
}

spawnSync('ip', ['netns', 'add', ns]);
try {
  const cases = [];
  for (const size of [64, 1518]) {
    const runs = { writev: [], uring: [] };
    for (let r = 0; r < ROUNDS; r++) for (const m of Object.keys(runs)) runs[m].push(one(m, size));
    const cpu = (m) => runs[m].map((x) => x.cpuNsPerFrame);
    cases.push({
      frameBytes: size,
      writevMpps: spread(runs.writev.map((x) => x.mpps)),
      uringMpps: spread(runs.uring.map((x) => x.mpps)),
      writevCpuNsPerFrame: spread(cpu('writev')),
      uringCpuNsPerFrame: spread(cpu('uring')),
      // Per round: io_uring's CPU per frame over writev's (below 1.0: io_uring is cheaper).
      uringOverWritev: spread(cpu('uring').map((x, k) => x / cpu('writev')[k])),
    });
    console.error(
      `tap write ${size} B: writev ${median(cpu('writev')).toFixed(0)} ns/frame, io_uring ${median(cpu('uring')).toFixed(0)} ns/frame (bursts of ${BURST})`,
    );
  }
  const r = save('tap-io-uring', {
    description: `frames written into a TAP (vnet header, IPv4 UDP to an address on its subnet) in a namespace, one process on core 0: one writev per frame against the same writevs queued to io_uring and submitted once per burst of ${BURST} (io_uring_submit_and_wait); the writer's CPU time (getrusage) per frame, which includes the kernel's work for each frame; alternating rounds`,
    rounds: ROUNDS,
    secondsPerRun: SECONDS,
    burst: BURST,
    cases,
  });
  console.log(r.cases[0].uringOverWritev.median.toFixed(3));
} finally {
  spawnSync('ip', ['netns', 'del', ns]);
  t.cleanup();
}
