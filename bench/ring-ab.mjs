// Before/after in one run: guest-RX (or guest-TX) VM-free ring throughput of this tree, of
// another tree (BASE, e.g. the previous commit in a git worktree with its own build), and of
// DPDK's vhost, alternating round by round. Prints each run, the medians and the per-round
// ratios. Not part of `npm run bench`; bench/notes.md quotes what it measured.
//   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && ln -s "$PWD/../main/node_modules" . && npm run build)
//   BASE=/tmp/base R=5 SIZE=64 node bench/ring-ab.mjs        # SPLIT=1 for split rings, DIR=guest-tx
import { median, ringRun, root } from './lib.mjs';

const ROUNDS = Number(process.env.R ?? 5);
const SIZE = Number(process.env.SIZE ?? 64);
const DIR = process.env.DIR ?? 'guest-rx';
const PACKED = !process.env.SPLIT;
const BASE = process.env.BASE;

const one = (impl) =>
  ringRun({
    impl: impl === 'dpdk' ? 'dpdk' : 'ours',
    dir: DIR,
    size: SIZE,
    packed: PACKED,
    tree: impl === 'base' ? BASE : root,
  });

const impls = BASE ? ['new', 'base', 'dpdk'] : ['new', 'dpdk'];
const runs = Object.fromEntries(impls.map((i) => [i, []]));
for (let r = 0; r < ROUNDS; r++) for (const i of impls) runs[i].push(await one(i));
const pps = (i) => runs[i].map((x) => x.pps);
const cpu = (i) => runs[i].map((x) => x.cpuMsPerMframe);
const ratios = (a, b) => a.map((x, k) => (x / b[k]).toFixed(2)).join(' ');
for (const i of impls) {
  console.log(
    `${i}: ${pps(i)
      .map((x) => (x / 1e6).toFixed(2))
      .join(' ')} Mpps, median ${(median(pps(i)) / 1e6).toFixed(2)}; CPU ms per Mframe ${cpu(i)
      .map((x) => x.toFixed(1))
      .join(' ')}`,
  );
}
for (const i of impls.filter((x) => x !== 'dpdk')) {
  console.log(
    `${i} / dpdk per round: ${ratios(pps(i), pps('dpdk'))}; dpdk CPU / ${i} CPU: ${ratios(cpu('dpdk'), cpu(i))}`,
  );
}
if (BASE) console.log(`new / base per round: ${ratios(pps('new'), pps('base'))}`);
console.log(`stolen CPU share per run: ${impls.flatMap((i) => runs[i].map((x) => x.stealShare.toFixed(3))).join(' ')}`);
