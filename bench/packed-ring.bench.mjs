// Benchmark: the packed ring (virtio 1.2 §2.8) against the split ring and DPDK's own vhost with
// packed rings, VM-free, 1 queue, 64 and 1518-byte frames, guest-TX and guest-RX.
// Front-end: dpdk-testpmd with net_virtio_user (plays QEMU + the guest driver) on core 1, with
// packed_vq=1 for the packed cases. Backends, alternated round by round in one invocation:
// vhost-user-net (null backend, worker on core 0) with packed rings, the same with split rings,
// the same with --poll-us 50 (DPDK's vhost polls all the time), and dpdk-testpmd net_vhost
// (forwarding core 0) with packed rings. Prints ours/DPDK packed, guest-TX 64 B.
import { median, ringRun, save, SECONDS, spread } from './lib.mjs';

const ROUNDS = Number(process.env.VUN_BENCH_RUNS ?? 5);

function one(impl, dir, size) {
  return ringRun({
    impl: impl === 'dpdk-packed' ? 'dpdk' : 'ours',
    dir,
    size,
    packed: impl !== 'ours-split',
    extra: impl === 'ours-packed-poll' ? ['--poll-us', '50'] : [],
  });
}

const IMPLS = ['ours-packed', 'ours-packed-poll', 'ours-split', 'dpdk-packed'];
const cases = [];
for (const dir of ['guest-tx', 'guest-rx']) {
  for (const size of [64, 1518]) {
    const runs = Object.fromEntries(IMPLS.map((i) => [i, []]));
    // Alternating rounds: each round measures all four, so drift hits each alike.
    for (let r = 0; r < ROUNDS; r++) for (const impl of IMPLS) runs[impl].push(await one(impl, dir, size));
    const pps = (impl) => runs[impl].map((x) => x.pps);
    const cpu = (impl) => runs[impl].map((x) => x.cpuMsPerMframe);
    const perRound = (a, b) => a.map((x, k) => x / b[k]);
    const mpps = (xs) => xs.map((x) => x / 1e6);
    const ratios = perRound(pps('ours-packed'), pps('dpdk-packed'));
    // CPU cost ratio the other way round (DPDK's cost over ours), so above 1 means we are cheaper.
    const cpuRatios = perRound(cpu('dpdk-packed'), cpu('ours-packed'));
    cases.push({
      direction: dir,
      frameBytes: size,
      oursPackedMpps: spread(mpps(pps('ours-packed'))),
      oursPackedPollMpps: spread(mpps(pps('ours-packed-poll'))),
      oursSplitMpps: spread(mpps(pps('ours-split'))),
      dpdkPackedMpps: spread(mpps(pps('dpdk-packed'))),
      // Per round, then the median of the rounds (with their spread).
      packedVsDpdk: spread(ratios),
      packedVsSplit: spread(perRound(pps('ours-packed'), pps('ours-split'))),
      packedPollVsDpdk: spread(perRound(pps('ours-packed-poll'), pps('dpdk-packed'))),
      cpuMsPerMframe: Object.fromEntries(IMPLS.map((i) => [i, spread(cpu(i))])),
      dpdkCpuOverOurs: spread(cpuRatios),
      stealShare: spread(IMPLS.flatMap((i) => runs[i].map((x) => x.stealShare))),
      runs: Object.fromEntries(IMPLS.map((i) => [i, mpps(pps(i))])),
      cpuRuns: Object.fromEntries(IMPLS.map((i) => [i, cpu(i)])),
    });
    console.error(
      `packed ${dir} ${size} B: ours packed ${(median(pps('ours-packed')) / 1e6).toFixed(2)} (polling ${(median(pps('ours-packed-poll')) / 1e6).toFixed(2)}), split ${(median(pps('ours-split')) / 1e6).toFixed(2)}, DPDK packed ${(median(pps('dpdk-packed')) / 1e6).toFixed(2)} Mpps; ours/DPDK ${median(ratios).toFixed(3)} [${Math.min(...ratios).toFixed(3)}, ${Math.max(...ratios).toFixed(3)}]; CPU ms per Mframe ours ${median(cpu('ours-packed')).toFixed(1)}, DPDK ${median(cpu('dpdk-packed')).toFixed(1)}`,
    );
  }
}
const r = save('packed-ring', {
  description:
    'testpmd virtio_user front-end (core 1; packed_vq=1 for packed) against vhost-user-net null backend with packed rings (event driven, and with --poll-us 50) and with split rings, and testpmd net_vhost with packed rings (core 0); per run the median of per-second samples and the backend CPU time per million frames (/proc/PID/stat over the same window); ratios per alternating round, median with min and max',
  rounds: ROUNDS,
  secondsPerRun: SECONDS,
  cases,
});
const headline = r.cases.find((c) => c.direction === 'guest-tx' && c.frameBytes === 64);
console.log(headline.packedVsDpdk.median.toFixed(3));
