// Benchmark 2: vhost-user -> TAP forwarding, 64 and 1518-byte frames, one backend core.
// Front-end: testpmd net_virtio_user txonly (core 1). Backends on core 0, alternated:
// (a) vhost-user-net --backend tap:vbt0,io-uring=on (a burst's writes submitted to io_uring at
// once); (a') the default, io-uring=auto (both ways measured while it runs, the cheaper kept:
// native/write_chooser.h); (a'') with io-uring=off (a write per frame, as net_tap does);
// (b) testpmd
// net_vhost + net_tap (iface vbt0) in io forwarding. Frames are counted on the TAP (its rx_packets) in a namespace we create. Beside
// packets per second, each backend's CPU time per million frames (/proc/PID/stat); testpmd
// polls, so its cost is its whole forwarding core. That time is split into user space and the
// kernel: both backends write each frame to the TAP, and the kernel's work for it (the write,
// then the host's stack in the writer's context) is the floor no user-space change goes below.
// `ceiling` is testpmd's whole cost over our kernel share: the ratio we would reach if our own
// code took no time at all.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  cpuSplit,
  median,
  ourBackend,
  save,
  SECONDS,
  sleep,
  spread,
  testpmd,
  tmp,
  virtioUserFrontend,
  waitForFile,
} from './lib.mjs';

const ROUNDS = Number(process.env.VUN_BENCH_RUNS ?? 4);

const ns = `vun-bench-${process.pid}`;
const sh = (cmd) => spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8' });
const rxPackets = () => Number(sh('cat /sys/class/net/vbt0/statistics/rx_packets').stdout.trim() || 0);

async function waitTap() {
  for (let i = 0; i < 200 && sh('ip link show vbt0').status !== 0; i++) await sleep(50);
  sh('ip link set vbt0 up');
}

async function one(impl, size) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const backend =
    impl !== 'dpdk'
      ? ourBackend({
          socket: sock,
          backend: { ours: 'tap:vbt0,io-uring=on', 'ours-plain': 'tap:vbt0,io-uring=off', 'ours-auto': 'tap:vbt0' }[
            impl
          ],
          cores: '0',
          netns: ns,
        })
      : testpmd({
          fwdCore: 0,
          mainCore: 1,
          netns: ns,
          vdevs: [`net_vhost0,iface=${sock},queues=1`, 'net_tap0,iface=vbt0'],
          mode: 'io',
        });
  await waitForFile(sock);
  const fe = virtioUserFrontend(sock, 'txonly', size);
  await waitTap();
  await sleep(2000);
  const a = rxPackets();
  const c0 = cpuSplit(backend.child.pid);
  const t0 = Date.now();
  await sleep(SECONDS * 1000);
  const b = rxPackets();
  const c1 = cpuSplit(backend.child.pid);
  const pps = (b - a) / ((Date.now() - t0) / 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  const perMframe = (s) => (s * 1000) / ((b - a) / 1e6);
  return {
    pps,
    cpuMsPerMframe: perMframe(c1.user - c0.user + c1.sys - c0.sys),
    sysMsPerMframe: perMframe(c1.sys - c0.sys),
  };
}

spawnSync('ip', ['netns', 'add', ns]);
try {
  const cases = [];
  for (const size of [64, 1518]) {
    const ours = [];
    const plain = [];
    const auto = [];
    const dpdk = [];
    // Each round runs the four in another order (rotated by one per round): none is always
    // first after a change of frame size, or always right after testpmd.
    const into = { ours, 'ours-auto': auto, 'ours-plain': plain, dpdk };
    const order = Object.keys(into);
    for (let r = 0; r < ROUNDS; r++)
      for (let k = 0; k < order.length; k++) {
        const impl = order[(k + r) % order.length];
        into[impl].push(await one(impl, size));
      }
    const mpps = (xs) => xs.map((x) => x.pps / 1e6);
    cases.push({
      frameBytes: size,
      oursMpps: spread(mpps(ours)),
      dpdkMpps: spread(mpps(dpdk)),
      ratio: spread(ours.map((x, k) => x.pps / dpdk[k].pps)),
      oursAutoMpps: spread(mpps(auto)),
      autoRatio: spread(auto.map((x, k) => x.pps / dpdk[k].pps)),
      // The default (io-uring=auto) against testpmd: the headline.
      defaultRatio: spread(auto.map((x, k) => x.pps / dpdk[k].pps)),
      // io-uring=auto against the better of the two fixed ways, round by round.
      autoVsBest: spread(auto.map((x, k) => x.pps / Math.max(ours[k].pps, plain[k].pps))),
      oursPlainMpps: spread(mpps(plain)),
      plainRatio: spread(plain.map((x, k) => x.pps / dpdk[k].pps)),
      oursPlainCpuMsPerMframe: spread(plain.map((x) => x.cpuMsPerMframe)),
      oursPlainSysMsPerMframe: spread(plain.map((x) => x.sysMsPerMframe)),
      oursCpuMsPerMframe: spread(ours.map((x) => x.cpuMsPerMframe)),
      dpdkCpuMsPerMframe: spread(dpdk.map((x) => x.cpuMsPerMframe)),
      oursSysMsPerMframe: spread(ours.map((x) => x.sysMsPerMframe)),
      dpdkSysMsPerMframe: spread(dpdk.map((x) => x.sysMsPerMframe)),
      ceiling: spread(ours.map((x, k) => dpdk[k].cpuMsPerMframe / x.sysMsPerMframe)),
      oursRuns: mpps(ours),
      dpdkRuns: mpps(dpdk),
    });
    console.error(
      `tap ${size} B: ours ${median(mpps(ours)).toFixed(3)} Mpps (io-uring=auto ${median(mpps(auto)).toFixed(3)}, io-uring=off ${median(mpps(plain)).toFixed(3)}), testpmd vhost+net_tap ${median(mpps(dpdk)).toFixed(3)} Mpps; ` +
        `CPU ms/Mframe (kernel) ours ${median(ours.map((x) => x.cpuMsPerMframe)).toFixed(0)} (${median(ours.map((x) => x.sysMsPerMframe)).toFixed(0)}), ` +
        `testpmd ${median(dpdk.map((x) => x.cpuMsPerMframe)).toFixed(0)} (${median(dpdk.map((x) => x.sysMsPerMframe)).toFixed(0)})`,
    );
  }
  const r = save('tap-forwarding', {
    description:
      'testpmd virtio_user txonly (core 1) -> backend (core 0) -> TAP; frames counted by the TAP (rx_packets); vhost-user-net (io-uring=on: io_uring batches; io-uring=auto, the default: both ways measured, the cheaper kept; io-uring=off: a write per frame) vs testpmd net_vhost+net_tap io forwarding; CPU per frame split into user and kernel (stime); ceiling = testpmd CPU per frame / our kernel CPU per frame, per round',
    rounds: ROUNDS,
    secondsPerRun: SECONDS,
    cases,
  });
  console.log(r.cases[0].ratio.median.toFixed(3));
} finally {
  spawnSync('ip', ['netns', 'del', ns]);
}
