// Benchmark 4: multiqueue scaling, VM-free: testpmd net_virtio_user txonly with several flows
// (--txonly-multi-flow) on 1 and then 2 queue pairs against vhost-user-net (null backend, one
// worker per pair). Beside the rate, the backend's CPU time per million frames: on 2 cores
// scaling cannot show, but a pair's cost per frame staying flat as pairs are added can. Prints
// the 2-pair/1-pair throughput ratio.
import { join } from 'node:path';
import {
  cpuSeconds,
  ourBackend,
  median,
  ppsSamples,
  RUNS,
  save,
  SECONDS,
  sleep,
  spread,
  steady,
  tmp,
  virtioUserFrontend,
  waitForFile,
} from './lib.mjs';

async function one(queues, threads) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  // The front-end's forwarding core is 1: our workers share core 0, or a busy poller and a
  // worker would fight over one core (HOST-NOTES: two busy pollers on 2 cores collapse).
  const backend = ourBackend({
    socket: sock,
    backend: 'null',
    queues,
    cores: process.env.VUN_BENCH_MQ_CORES ?? '0',
    extra: threads ? ['--threads', String(threads)] : [],
  });
  await waitForFile(sock);
  const fe = virtioUserFrontend(sock, 'txonly', 64, { queues, extra: ['--txonly-multi-flow'] });
  await sleep(2000);
  const cpu0 = cpuSeconds(backend.child.pid);
  const w0 = Date.now();
  await sleep(SECONDS * 1000);
  const cpu1 = cpuSeconds(backend.child.pid);
  const wall = (Date.now() - w0) / 1000;
  await fe.stop();
  await backend.stop();
  t.cleanup();
  const pps = steady(ppsSamples(fe.out, 'Tx')).median;
  return { pps, cpuMsPerMframe: ((cpu1 - cpu0) * 1000) / ((pps * wall) / 1e6) };
}

// Three set-ups per round: 1 pair; 2 pairs with a thread each (the default); 2 pairs on one
// thread (--threads 1), as a DPDK lcore polls several queues. On one shared core the second
// is what keeps the cost per frame flat: two threads there wake and sleep in turn.
const res = { one: [], two: [], twoOneThread: [] };
for (let r = 0; r < RUNS; r++) {
  res.one.push(await one(1));
  res.two.push(await one(2));
  res.twoOneThread.push(await one(2, 1));
}
const pps = (k) => res[k].map((x) => x.pps);
const cpu = (k) => res[k].map((x) => x.cpuMsPerMframe);
// Per round: a set-up's CPU per frame over 1 pair's (1.0 = flat).
const perFrame = (k) => spread(cpu(k).map((x, i) => x / cpu('one')[i]));
const r = save('mq-scaling', {
  description: `testpmd virtio_user txonly, 64 B, --txonly-multi-flow, one forwarding core (core 1); vhost-user-net null backend with 1 or 2 queue pairs (2 pairs: a worker thread each, or both on one with --threads 1), workers on cores ${process.env.VUN_BENCH_MQ_CORES ?? '0'}; the backend's CPU time per million frames over the measured window; rounds alternate the three`,
  runs: RUNS,
  secondsPerRun: SECONDS,
  onePairMpps: median(pps('one')) / 1e6,
  twoPairsMpps: median(pps('two')) / 1e6,
  twoPairsOneThreadMpps: median(pps('twoOneThread')) / 1e6,
  ratio: median(pps('two')) / median(pps('one')),
  oneThreadRatio: median(pps('twoOneThread')) / median(pps('one')),
  onePairRuns: pps('one').map((x) => x / 1e6),
  twoPairsRuns: pps('two').map((x) => x / 1e6),
  twoPairsOneThreadRuns: pps('twoOneThread').map((x) => x / 1e6),
  onePairCpuMsPerMframe: spread(cpu('one')),
  twoPairsCpuMsPerMframe: spread(cpu('two')),
  twoPairsOneThreadCpuMsPerMframe: spread(cpu('twoOneThread')),
  cpuPerFrameRatio: perFrame('two'),
  oneThreadCpuPerFrameRatio: perFrame('twoOneThread'),
});
const c = (x) => x.median.toFixed(1);
console.error(
  `mq: 1 pair ${r.onePairMpps.toFixed(2)} Mpps, 2 pairs ${r.twoPairsMpps.toFixed(2)}, 2 pairs on 1 thread ${r.twoPairsOneThreadMpps.toFixed(2)}; CPU ms per Mframe ${c(r.onePairCpuMsPerMframe)}, ${c(r.twoPairsCpuMsPerMframe)}, ${c(r.twoPairsOneThreadCpuMsPerMframe)}`,
);
console.log(r.ratio.toFixed(3));
