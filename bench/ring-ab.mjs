// Before/after in one run: guest-RX (or guest-TX) VM-free ring throughput of this tree, of
// another tree (BASE, e.g. the previous commit in a git worktree with its own build), and of
// DPDK's vhost, alternating round by round. Prints each run, the medians and the per-round
// ratios. Not part of `npm run bench`; bench/notes.md quotes what it measured.
//   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && ln -s "$PWD/../main/node_modules" . && npm run build)
//   BASE=/tmp/base R=5 SIZE=64 node bench/ring-ab.mjs        # SPLIT=1 for split rings, DIR=guest-tx
import { join } from 'node:path';
import { median, ourBackend, ppsSamples, root, SECONDS, sleep, steady, testpmd, tmp, waitForFile } from './lib.mjs';

const ROUNDS = Number(process.env.R ?? 5);
const SIZE = Number(process.env.SIZE ?? 64);
const DIR = process.env.DIR ?? 'guest-rx';
const PACKED = !process.env.SPLIT;
const BASE = process.env.BASE;

async function one(impl) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const backend =
    impl === 'dpdk'
      ? testpmd({
          fwdCore: 0,
          mainCore: 1,
          vdevs: [`net_vhost0,iface=${sock},queues=1`],
          mode: DIR === 'guest-rx' ? 'txonly' : 'rxonly',
          txpkts: SIZE,
        })
      : ourBackend({
          socket: sock,
          backend: DIR === 'guest-rx' ? `null:source=${SIZE}` : 'null',
          cores: '0',
          tree: impl === 'base' ? BASE : root,
        });
  await waitForFile(sock);
  const fe = testpmd({
    fwdCore: 1,
    mainCore: 0,
    vdevs: [`net_virtio_user0,path=${sock},queues=1${PACKED ? ',packed_vq=1' : ''}`],
    mode: DIR === 'guest-rx' ? 'rxonly' : 'txonly',
    txpkts: SIZE,
  });
  await sleep((SECONDS + 2) * 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  return steady(ppsSamples(fe.out, DIR === 'guest-rx' ? 'Rx' : 'Tx')).median;
}

const impls = BASE ? ['new', 'base', 'dpdk'] : ['new', 'dpdk'];
const runs = Object.fromEntries(impls.map((i) => [i, []]));
for (let r = 0; r < ROUNDS; r++) for (const i of impls) runs[i].push(await one(i));
const mpps = (xs) => xs.map((x) => (x / 1e6).toFixed(2)).join(' ');
const ratios = (a, b) => a.map((x, k) => (x / b[k]).toFixed(2)).join(' ');
for (const i of impls) console.log(`${i}: ${mpps(runs[i])} Mpps, median ${(median(runs[i]) / 1e6).toFixed(2)}`);
for (const i of impls.filter((x) => x !== 'dpdk')) console.log(`${i} / dpdk per round: ${ratios(runs[i], runs.dpdk)}`);
if (BASE) console.log(`new / base per round: ${ratios(runs.new, runs.base)}`);
