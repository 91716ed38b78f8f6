// Benchmark 4: multiqueue scaling, VM-free: testpmd net_virtio_user txonly with several flows
// (--txonly-multi-flow) on 1 and then 2 queue pairs against vhost-user-net (null backend, one
// worker per pair). Prints the 2-pair/1-pair throughput ratio.
import { join } from 'node:path';
import {
  ourBackend,
  ppsSamples,
  RUNS,
  save,
  SECONDS,
  sleep,
  steady,
  tmp,
  virtioUserFrontend,
  waitForFile,
} from './lib.mjs';

async function one(queues) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  // The front-end's forwarding core is 1: our workers share core 0, or a busy poller and a
  // worker would fight over one core (HOST-NOTES: two busy pollers on 2 cores collapse).
  const backend = ourBackend({ socket: sock, backend: 'null', queues, cores: process.env.VUN_BENCH_MQ_CORES ?? '0' });
  await waitForFile(sock);
  const fe = virtioUserFrontend(sock, 'txonly', 64, { queues, extra: ['--txonly-multi-flow'] });
  await sleep((SECONDS + 2) * 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  return steady(ppsSamples(fe.out, 'Tx')).median;
}

const res = { 1: [], 2: [] };
for (let r = 0; r < RUNS; r++) {
  res[1].push(await one(1));
  res[2].push(await one(2));
}
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const r = save('mq-scaling', {
  description: `testpmd virtio_user txonly, 64 B, --txonly-multi-flow, one forwarding core (core 1); vhost-user-net null backend with 1 or 2 queue pairs, workers on cores ${process.env.VUN_BENCH_MQ_CORES ?? '0'}`,
  runs: RUNS,
  secondsPerRun: SECONDS,
  onePairMpps: med(res[1]) / 1e6,
  twoPairsMpps: med(res[2]) / 1e6,
  ratio: med(res[2]) / med(res[1]),
  onePairRuns: res[1].map((x) => x / 1e6),
  twoPairsRuns: res[2].map((x) => x / 1e6),
});
console.error(`mq: 1 pair ${r.onePairMpps.toFixed(2)} Mpps, 2 pairs ${r.twoPairsMpps.toFixed(2)} Mpps`);
console.log(r.ratio.toFixed(3));
