// Benchmark 2: vhost-user -> TAP forwarding, 64 and 1518-byte frames, one backend core.
// Front-end: testpmd net_virtio_user txonly (core 1). Backends on core 0, alternated:
// (a) vhost-user-net --backend tap:vbt0; (b) testpmd net_vhost + net_tap (iface vbt0) in io
// forwarding. Frames are counted on the TAP (its rx_packets) in a namespace we create.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ourBackend, RUNS, save, SECONDS, sleep, testpmd, tmp, virtioUserFrontend, waitForFile } from './lib.mjs';

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
  const t0 = Date.now();
  await sleep(SECONDS * 1000);
  const b = rxPackets();
  const pps = (b - a) / ((Date.now() - t0) / 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  return pps;
}

spawnSync('ip', ['netns', 'add', ns]);
try {
  const cases = [];
  for (const size of [64, 1518]) {
    const ours = [];
    const dpdk = [];
    for (let r = 0; r < RUNS; r++) {
      ours.push(await one('ours', size));
      dpdk.push(await one('dpdk', size));
    }
    const med = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    cases.push({
      frameBytes: size,
      oursMpps: med(ours) / 1e6,
      dpdkMpps: med(dpdk) / 1e6,
      ratio: med(ours) / med(dpdk),
      oursRuns: ours.map((x) => x / 1e6),
      dpdkRuns: dpdk.map((x) => x / 1e6),
    });
    console.error(
      `tap ${size} B: ours ${(med(ours) / 1e6).toFixed(3)} Mpps, testpmd vhost+net_tap ${(med(dpdk) / 1e6).toFixed(3)} Mpps`,
    );
  }
  const r = save('tap-forwarding', {
    description:
      'testpmd virtio_user txonly (core 1) -> backend (core 0) -> TAP; frames counted by the TAP (rx_packets); vhost-user-net vs testpmd net_vhost+net_tap io forwarding',
    runs: RUNS,
    secondsPerRun: SECONDS,
    cases,
  });
  console.log(r.cases[0].ratio.toFixed(3));
} finally {
  spawnSync('ip', ['netns', 'del', ns]);
}
