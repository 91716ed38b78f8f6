// Benchmark 1: VM-free ring throughput, 1 queue, 64 and 1518-byte frames, guest-TX and guest-RX.
// Front-end: dpdk-testpmd with net_virtio_user (plays QEMU + guest driver), forwarding core 1.
// Backends, alternated in the same invocation: (a) vhost-user-net with the null backend, worker
// on core 0, event driven and with --poll-us 50; (b) dpdk-testpmd with net_vhost, forwarding
// core 0. Prints our/DPDK guest-TX 64 B.
import { join } from 'node:path';
import {
  ourBackend,
  RUNS,
  save,
  SECONDS,
  sleep,
  steady,
  testpmd,
  tmp,
  waitForFile,
  ppsSamples,
  virtioUserFrontend,
} from './lib.mjs';

async function one(impl, dir, size) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  let backend;
  if (impl !== 'dpdk') {
    const extra = impl === 'ours-poll' ? ['--poll-us', '50'] : [];
    backend = ourBackend({
      socket: sock,
      backend: dir === 'guest-rx' ? `null:source=${size}` : 'null',
      cores: '0',
      extra,
    });
    await waitForFile(sock);
  } else {
    backend = testpmd({
      fwdCore: 0,
      mainCore: 1,
      vdevs: [`net_vhost0,iface=${sock},queues=1`],
      mode: dir === 'guest-rx' ? 'txonly' : 'rxonly',
      txpkts: size,
    });
    await waitForFile(sock);
  }
  const fe = virtioUserFrontend(sock, dir === 'guest-rx' ? 'rxonly' : 'txonly', size);
  await sleep((SECONDS + 2) * 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  const s = steady(ppsSamples(fe.out, dir === 'guest-rx' ? 'Rx' : 'Tx'));
  if (!s.n) throw new Error(`${impl} ${dir} ${size}: no samples\n${fe.out.slice(-1500)}\n${backend.out.slice(-1500)}`);
  return s.median;
}

const cases = [];
for (const dir of ['guest-tx', 'guest-rx']) {
  for (const size of [64, 1518]) {
    const ours = [];
    const poll = [];
    const dpdk = [];
    for (let r = 0; r < RUNS; r++) {
      ours.push(await one('ours', dir, size));
      poll.push(await one('ours-poll', dir, size));
      dpdk.push(await one('dpdk', dir, size));
    }
    const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    cases.push({
      direction: dir,
      frameBytes: size,
      oursMpps: med(ours) / 1e6,
      dpdkMpps: med(dpdk) / 1e6,
      // Each ratio from runs of the same alternating round, then their median.
      ratio: med(ours.map((x, k) => x / dpdk[k])),
      oursPollMpps: med(poll) / 1e6,
      pollRatio: med(poll.map((x, k) => x / dpdk[k])),
      oursRuns: ours.map((x) => x / 1e6),
      oursPollRuns: poll.map((x) => x / 1e6),
      dpdkRuns: dpdk.map((x) => x / 1e6),
    });
    console.error(
      `ring ${dir} ${size} B: ours ${(med(ours) / 1e6).toFixed(2)} Mpps, DPDK vhost ${(med(dpdk) / 1e6).toFixed(2)} Mpps`,
    );
  }
}
const r = save('ring-throughput', {
  description:
    'testpmd virtio_user front-end (core 1) against vhost-user-net null backend vs testpmd net_vhost (core 0), alternating rounds; median of per-second samples, median of runs; each ratio from the runs of one round, then the median',
  runs: RUNS,
  secondsPerRun: SECONDS,
  cases,
});
const headline = r.cases.find((c) => c.direction === 'guest-tx' && c.frameBytes === 64);
console.log(headline.ratio.toFixed(3));
