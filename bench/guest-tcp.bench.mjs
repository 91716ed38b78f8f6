// Benchmark 3: guest iperf3 TCP, both directions, through a TAP in a namespace: the same guest
// on vhost-user-net (C++ data path) and on QEMU's built-in virtio-net (-netdev tap,vhost=off),
// alternated in one invocation. Under TCG (no usable KVM) the guest's vCPU is the bottleneck
// for both: the ratio says more than the absolute figures. Prints the ratio guest->host.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, mbits, Netns, startBackend, waitForLink } from '../dist/guest/guest.js';
import { RUNS, save, sleep, tmp } from './lib.mjs';

const SECS = Number(process.env.VUN_BENCH_SECONDS ?? 6);
const script = `
ping -c 2 -W 3 10.77.0.1 >/dev/null 2>&1
iperf3 -c 10.77.0.1 -t ${SECS} -f m > /tmp/i1 2>&1; res tx $? "$(grep receiver /tmp/i1 | tail -1)"
iperf3 -c 10.77.0.1 -t ${SECS} -f m -R > /tmp/i2 2>&1; res rx $? "$(grep receiver /tmp/i2 | tail -1)"
`;

/** iperf3 server on the host end (after its address exists, or it cannot bind). */
function startIperf(ns, cleanups) {
  const iperf = ns.spawn('iperf3', ['-s', '-B', '10.77.0.1']);
  cleanups.unshift(() => iperf.stop());
}

async function one(impl) {
  const ns = new Netns();
  const t = tmp();
  const cleanups = [() => ns.delete(), t.cleanup];
  try {
    let g;
    if (impl === 'ours') {
      const sock = join(t.dir, 'vhost.sock');
      const b = startBackend(ns, sock, ['--backend', 'tap:vbt0', '--log-level', 'warn']);
      cleanups.unshift(() => b.stop());
      await waitForLink(ns, 'vbt0');
      while (!existsSync(sock)) await sleep(50);
      ns.sh('ip addr add 10.77.0.1/24 dev vbt0');
      startIperf(ns, cleanups);
      g = bootGuest({ socketPath: sock, ip: '10.77.0.2/24', script });
    } else {
      ns.sh('ip tuntap add dev vbt0 mode tap vnet_hdr && ip addr add 10.77.0.1/24 dev vbt0 && ip link set vbt0 up');
      startIperf(ns, cleanups);
      g = bootGuest({ socketPath: '', builtinTap: 'vbt0', netns: ns.name, ip: '10.77.0.2/24', script });
    }
    cleanups.unshift(() => g.cleanup());
    const r = await g.done(300_000);
    const res = { tx: mbits(r.get('tx')?.text ?? ''), rx: mbits(r.get('rx')?.text ?? '') };
    if (!res.tx || !res.rx) throw new Error(`${impl}: iperf3 failed:\n${g.qemu.tail(20)}`);
    return res;
  } finally {
    for (const c of cleanups) await c();
  }
}

const ours = [];
const qemu = [];
for (let i = 0; i < RUNS; i++) {
  ours.push(await one('ours'));
  qemu.push(await one('qemu'));
}
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const res = save('guest-tcp', {
  description:
    'iperf3 TCP in a Linux guest (1 vCPU) to/from a TAP in a namespace; vhost-user-net vs QEMU -netdev tap,vhost=off; same guest image and QEMU',
  runs: RUNS,
  secondsPerRun: SECS,
  guestToHost: { oursMbits: med(ours.map((x) => x.tx)), qemuMbits: med(qemu.map((x) => x.tx)) },
  hostToGuest: { oursMbits: med(ours.map((x) => x.rx)), qemuMbits: med(qemu.map((x) => x.rx)) },
  oursRuns: ours,
  qemuRuns: qemu,
});
res.guestToHost.ratio = res.guestToHost.oursMbits / res.guestToHost.qemuMbits;
res.hostToGuest.ratio = res.hostToGuest.oursMbits / res.hostToGuest.qemuMbits;
save('guest-tcp', res);
console.error(
  `guest TCP: guest->host ours ${res.guestToHost.oursMbits} vs QEMU ${res.guestToHost.qemuMbits} Mbit/s; host->guest ours ${res.hostToGuest.oursMbits} vs QEMU ${res.hostToGuest.qemuMbits}`,
);
console.log(res.guestToHost.ratio.toFixed(3));
