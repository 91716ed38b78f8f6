// Benchmark 2: vhost-user -> TAP forwarding, 64 and 1518-byte frames, one backend core.
// Front-end: testpmd net_virtio_user txonly (core 1). Backends on core 0, alternated:
// (a) vhost-user-net --backend tap:vbt0; (b) testpmd net_vhost + net_tap (iface vbt0) in io
// forwarding. Frames are counted on the TAP (its rx_packets) in a namespace we create. Beside
// packets per second, each backend's CPU time per million frames (/proc/PID/stat); testpmd
// polls, so its cost is its whole forwarding core.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  cpuSeconds,
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

const ROUNDS = Number(process.env.VUN_BENCH_RUNS ?? 5);

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
    impl === 'ours'
      ? ourBackend({ socket: sock, backend: 'tap:vbt0', cores: '0', netns: ns })
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
  const c0 = cpuSeconds(backend.child.pid);
  const t0 = Date.now();
  await sleep(SECONDS * 1000);
  const b = rxPackets();
  const cpu = cpuSeconds(backend.child.pid) - c0;
  const pps = (b - a) / ((Date.now() - t0) / 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  return { pps, cpuMsPerMframe: (cpu * 1000) / ((b - a) / 1e6) };
}

spawnSync('ip', ['netns', 'add', ns]);
try {
  const cases = [];
  for (const size of [64, 1518]) {
    const ours = [];
    const dpdk = [];
    for (let r = 0; r < ROUNDS; r++) {
      ours.push(await one('ours', size));
      dpdk.push(await one('dpdk', size));
    }
    const mpps = (xs) => xs.map((x) => x.pps / 1e6);
    cases.push({
      frameBytes: size,
      oursMpps: spread(mpps(ours)),
      dpdkMpps: spread(mpps(dpdk)),
      ratio: spread(ours.map((x, k) => x.pps / dpdk[k].pps)),
      oursCpuMsPerMframe: spread(ours.map((x) => x.cpuMsPerMframe)),
      dpdkCpuMsPerMframe: spread(dpdk.map((x) => x.cpuMsPerMframe)),
      oursRuns: mpps(ours),
      dpdkRuns: mpps(dpdk),
    });
    console.error(
      `tap ${size} B: ours ${median(mpps(ours)).toFixed(3)} Mpps, testpmd vhost+net_tap ${median(mpps(dpdk)).toFixed(3)} Mpps`,
    );
  }
  const r = save('tap-forwarding', {
    description:
      'testpmd virtio_user txonly (core 1) -> backend (core 0) -> TAP; frames counted by the TAP (rx_packets); vhost-user-net vs testpmd net_vhost+net_tap io forwarding',
    rounds: ROUNDS,
    secondsPerRun: SECONDS,
    cases,
  });
  console.log(r.cases[0].ratio.median.toFixed(3));
} finally {
  spawnSync('ip', ['netns', 'del', ns]);
}
