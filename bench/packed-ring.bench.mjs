// Benchmark: the packed ring (virtio 1.2 §2.8) against the split ring and DPDK's own vhost with
// packed rings, VM-free, 1 queue, 64 and 1518-byte frames, guest-TX and guest-RX.
// Front-end: dpdk-testpmd with net_virtio_user (plays QEMU + the guest driver) on core 1, with
// packed_vq=1 for the packed cases. Backends, alternated round by round in one invocation:
// vhost-user-net (null backend, worker on core 0) with packed rings, the same with split rings,
// the same with --poll-us 50 (DPDK's vhost polls all the time), and dpdk-testpmd net_vhost
// (forwarding core 0) with packed rings. Prints ours/DPDK packed, guest-TX 64 B.
import { join } from 'node:path';
import { median, ourBackend, ppsSamples, save, SECONDS, sleep, steady, testpmd, tmp, waitForFile } from './lib.mjs';

const ROUNDS = Number(process.env.VUN_BENCH_RUNS ?? 5);

async function one(impl, dir, size) {
  const packed = impl !== 'ours-split';
  const extra = impl === 'ours-packed-poll' ? ['--poll-us', '50'] : [];
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const backend =
    impl === 'dpdk-packed'
      ? testpmd({
          fwdCore: 0,
          mainCore: 1,
          vdevs: [`net_vhost0,iface=${sock},queues=1`],
          mode: dir === 'guest-rx' ? 'txonly' : 'rxonly',
          txpkts: size,
        })
      : ourBackend({
          socket: sock,
          backend: dir === 'guest-rx' ? `null:source=${size}` : 'null',
          cores: '0',
          extra,
        });
  await waitForFile(sock);
  const fe = testpmd({
    fwdCore: 1,
    mainCore: 0,
    vdevs: [`net_virtio_user0,path=${sock},queues=1${packed ? ',packed_vq=1' : ''}`],
    mode: dir === 'guest-rx' ? 'rxonly' : 'txonly',
    txpkts: size,
  });
  await sleep((SECONDS + 2) * 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  const s = steady(ppsSamples(fe.out, dir === 'guest-rx' ? 'Rx' : 'Tx'));
  if (!s.n) throw new Error(`${impl} ${dir} ${size}: no samples\n${fe.out.slice(-1500)}\n${backend.out.slice(-1500)}`);
  return s.median;
}

const IMPLS = ['ours-packed', 'ours-packed-poll', 'ours-split', 'dpdk-packed'];
const cases = [];
for (const dir of ['guest-tx', 'guest-rx']) {
  for (const size of [64, 1518]) {
    const runs = Object.fromEntries(IMPLS.map((i) => [i, []]));
    // Alternating rounds: each round measures all three, so drift hits each alike.
    for (let r = 0; r < ROUNDS; r++) for (const impl of IMPLS) runs[impl].push(await one(impl, dir, size));
    const ratios = runs['ours-packed'].map((x, k) => x / runs['dpdk-packed'][k]);
    const vsSplit = runs['ours-packed'].map((x, k) => x / runs['ours-split'][k]);
    const pollRatios = runs['ours-packed-poll'].map((x, k) => x / runs['dpdk-packed'][k]);
    const spread = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
    const mpps = (xs) => xs.map((x) => x / 1e6);
    cases.push({
      direction: dir,
      frameBytes: size,
      oursPackedMpps: spread(mpps(runs['ours-packed'])),
      oursPackedPollMpps: spread(mpps(runs['ours-packed-poll'])),
      oursSplitMpps: spread(mpps(runs['ours-split'])),
      dpdkPackedMpps: spread(mpps(runs['dpdk-packed'])),
      // Per round, then the median of the rounds (with their spread).
      packedVsDpdk: spread(ratios),
      packedVsSplit: spread(vsSplit),
      packedPollVsDpdk: spread(pollRatios),
      runs: Object.fromEntries(IMPLS.map((i) => [i, mpps(runs[i])])),
    });
    console.error(
      `packed ${dir} ${size} B: ours packed ${(median(runs['ours-packed']) / 1e6).toFixed(2)} (polling ${(median(runs['ours-packed-poll']) / 1e6).toFixed(2)}), split ${(median(runs['ours-split']) / 1e6).toFixed(2)}, DPDK packed ${(median(runs['dpdk-packed']) / 1e6).toFixed(2)} Mpps; ours/DPDK ${median(ratios).toFixed(3)} [${Math.min(...ratios).toFixed(3)}, ${Math.max(...ratios).toFixed(3)}]`,
    );
  }
}
const r = save('packed-ring', {
  description:
    'testpmd virtio_user front-end (core 1; packed_vq=1 for packed) against vhost-user-net null backend with packed rings (event driven, and with --poll-us 50) and with split rings, and testpmd net_vhost with packed rings (core 0); per run the median of per-second samples; ratios per alternating round, median with min and max',
  rounds: ROUNDS,
  secondsPerRun: SECONDS,
  cases,
});
const headline = r.cases.find((c) => c.direction === 'guest-tx' && c.frameBytes === 64);
console.log(headline.packedVsDpdk.median.toFixed(3));
