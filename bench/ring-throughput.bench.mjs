// Benchmark 1: VM-free ring throughput, 1 queue, 64 and 1518-byte frames, guest-TX and guest-RX.
// Front-end: dpdk-testpmd with net_virtio_user (plays QEMU + guest driver), forwarding core 1.
// Backends, alternated in the same invocation: (a) vhost-user-net with the null backend, worker
// on core 0, event driven and with --poll-us 50; (b) dpdk-testpmd with net_vhost, forwarding
// core 0. Prints our/DPDK guest-TX 64 B.
import { median, RUNS, ringRun, save, SECONDS, spread } from './lib.mjs';

const one = (impl, dir, size) =>
  ringRun({
    impl: impl === 'dpdk' ? 'dpdk' : 'ours',
    dir,
    size,
    extra: impl === 'ours-poll' ? ['--poll-us', '50'] : [],
  });

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
    const pps = (xs) => xs.map((x) => x.pps);
    const cpu = (xs) => xs.map((x) => x.cpuMsPerMframe);
    const perRound = (a, b) => a.map((x, k) => x / b[k]);
    cases.push({
      direction: dir,
      frameBytes: size,
      oursMpps: median(pps(ours)) / 1e6,
      dpdkMpps: median(pps(dpdk)) / 1e6,
      // Each ratio from runs of the same alternating round, then their median (min, max).
      ratio: spread(perRound(pps(ours), pps(dpdk))),
      oursPollMpps: median(pps(poll)) / 1e6,
      pollRatio: spread(perRound(pps(poll), pps(dpdk))),
      // The backend's CPU time per million frames; DPDK's over ours, so above 1 means we are cheaper.
      oursCpuMsPerMframe: spread(cpu(ours)),
      dpdkCpuMsPerMframe: spread(cpu(dpdk)),
      dpdkCpuOverOurs: spread(perRound(cpu(dpdk), cpu(ours))),
      stealShare: spread([...ours, ...poll, ...dpdk].map((x) => x.stealShare)),
      oursRuns: pps(ours).map((x) => x / 1e6),
      oursPollRuns: pps(poll).map((x) => x / 1e6),
      dpdkRuns: pps(dpdk).map((x) => x / 1e6),
    });
    console.error(
      `ring ${dir} ${size} B: ours ${(median(pps(ours)) / 1e6).toFixed(2)} Mpps, DPDK vhost ${(median(pps(dpdk)) / 1e6).toFixed(2)} Mpps; CPU ms per Mframe ours ${median(cpu(ours)).toFixed(1)}, DPDK ${median(cpu(dpdk)).toFixed(1)}`,
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
console.log(headline.ratio.median.toFixed(3));
