// Benchmark 3: guest iperf3 TCP, both directions, and ping round trips, through a TAP in a
// namespace: the same guest on vhost-user-net (C++ data path; interrupt coalescing as by
// default, with a 300 us window, and off) and on QEMU's built-in virtio-net (-netdev tap,vhost=off), alternated in
// one invocation. Under TCG (no usable KVM) the guest's vCPU is the bottleneck for all: the
// ratios say more than the absolute figures. Ping: 100 echoes 20 ms apart from the guest (an
// idle link: what a moderated device must not make slower), p50 and p99 of their RTT. Prints
// the ratio guest->host.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, mbits, Netns, startBackend, waitForLink } from '../dist/guest/guest.js';
import { median, pinProcess, pinQemu, RUNS, save, sleep, spread, tmp } from './lib.mjs';

const SECS = Number(process.env.VUN_BENCH_SECONDS ?? 6);
const PINGS = Number(process.env.VUN_BENCH_PINGS ?? 100);
const script = `
ping -c 2 -W 3 10.77.0.1 >/dev/null 2>&1
ping -c ${PINGS} -i 0.02 -W 2 10.77.0.1 > /tmp/p 2>&1; res ping $? "$(grep -o 'time=[0-9.]*' /tmp/p | cut -d= -f2 | tr '\\n' ' ')"
iperf3 -c 10.77.0.1 -t ${SECS} -f m > /tmp/i1 2>&1; res tx $? "$(grep receiver /tmp/i1 | tail -1)"
iperf3 -c 10.77.0.1 -t ${SECS} -f m -R > /tmp/i2 2>&1; res rx $? "$(grep receiver /tmp/i2 | tail -1)"
`;

/** iperf3 server on the host end (after its address exists, or it cannot bind). */
function startIperf(ns, cleanups) {
  const iperf = ns.spawn('iperf3', ['-s', '-B', '10.77.0.1']);
  cleanups.unshift(() => iperf.stop());
}

// "-pinned": laid out as an operator would with libvirt's <vcpupin>/<emulatorpin>: the vCPU thread
// alone on core 1; QEMU's main loop (which relays kicks and interrupts under TCG, and is the
// built-in device's data path) and all of our backend (worker pinned with --cpus 0) on core 0.
const VCPU_CORE = 1;
const EMULATOR_CORE = 0;

async function one(impl) {
  const pinned = impl.endsWith('-pinned');
  const ns = new Netns();
  const t = tmp();
  const cleanups = [() => ns.delete(), t.cleanup];
  try {
    let g;
    const qemuArgs = ['-name', 'vun-bench,debug-threads=on'];
    if (!impl.startsWith('qemu')) {
      const sock = join(t.dir, 'vhost.sock');
      const extra =
        impl === 'ours-off'
          ? ['--coalesce', 'off']
          : impl === 'ours-wide'
            ? ['--coalesce-usecs', '300']
            : pinned
              ? ['--cpus', String(EMULATOR_CORE)]
              : [];
      const b = startBackend(ns, sock, ['--backend', 'tap:vbt0', '--log-level', 'warn', ...extra]);
      cleanups.unshift(() => b.stop());
      if (pinned) pinProcess(b.pid, EMULATOR_CORE);
      await waitForLink(ns, 'vbt0');
      while (!existsSync(sock)) await sleep(50);
      ns.sh('ip addr add 10.77.0.1/24 dev vbt0');
      startIperf(ns, cleanups);
      g = bootGuest({ socketPath: sock, ip: '10.77.0.2/24', script, extraArgs: qemuArgs });
    } else {
      ns.sh('ip tuntap add dev vbt0 mode tap vnet_hdr && ip addr add 10.77.0.1/24 dev vbt0 && ip link set vbt0 up');
      startIperf(ns, cleanups);
      g = bootGuest({
        socketPath: '',
        builtinTap: 'vbt0',
        netns: ns.name,
        ip: '10.77.0.2/24',
        script,
        extraArgs: qemuArgs,
      });
    }
    cleanups.unshift(() => g.cleanup());
    if (pinned) await pinQemu(g.qemu.pid, { vcpuCore: VCPU_CORE, emulatorCore: EMULATOR_CORE });
    const r = await g.done(300_000);
    const rtts = (r.get('ping')?.text ?? '')
      .trim()
      .split(/\s+/)
      .map(Number)
      .filter((x) => x > 0);
    const res = { tx: mbits(r.get('tx')?.text ?? ''), rx: mbits(r.get('rx')?.text ?? ''), ...rttOf(rtts) };
    if (!res.tx || !res.rx) throw new Error(`${impl}: iperf3 failed:\n${g.qemu.tail(20)}`);
    if (rtts.length < PINGS * 0.9) throw new Error(`${impl}: ${rtts.length} of ${PINGS} pings answered`);
    return res;
  } finally {
    for (const c of cleanups) await c();
  }
}

/** p50 and p99 (nearest rank) of round-trip times in ms. */
function rttOf(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? 0;
  return { rttP50: rank(50), rttP99: rank(99), pings: s.length };
}

const IMPLS = ['ours', 'ours-wide', 'ours-off', 'qemu', 'ours-pinned', 'qemu-pinned'];
const runs = Object.fromEntries(IMPLS.map((i) => [i, []]));
for (let i = 0; i < RUNS; i++) for (const impl of IMPLS) runs[impl].push(await one(impl));
const perRound = (a, b, k) => spread(runs[a].map((x, j) => x[k] / runs[b][j][k]));
const of = (impl, k) => spread(runs[impl].map((x) => x[k]));
const res = save('guest-tcp', {
  description:
    'iperf3 TCP in a Linux guest (1 vCPU, TCG) to/from a TAP in a namespace, and ping RTT from the guest (100 echoes, 20 ms apart); vhost-user-net (interrupt coalescing adaptive as by default, adaptive with --coalesce-usecs 300, and off) vs QEMU -netdev tap,vhost=off; same guest image and QEMU; unpinned, and both pinned as libvirt would (the vCPU thread on one core, the other QEMU threads and the backend on the other); alternating rounds',
  runs: RUNS,
  secondsPerRun: SECS,
  guestToHost: {
    oursMbits: of('ours', 'tx'),
    oursOffMbits: of('ours-off', 'tx'),
    oursWideMbits: of('ours-wide', 'tx'),
    qemuMbits: of('qemu', 'tx'),
    ratio: perRound('ours', 'qemu', 'tx'),
    offRatio: perRound('ours-off', 'qemu', 'tx'),
    wideRatio: perRound('ours-wide', 'qemu', 'tx'),
    oursPinnedMbits: of('ours-pinned', 'tx'),
    qemuPinnedMbits: of('qemu-pinned', 'tx'),
    pinnedRatio: perRound('ours-pinned', 'qemu-pinned', 'tx'),
  },
  hostToGuest: {
    oursMbits: of('ours', 'rx'),
    oursOffMbits: of('ours-off', 'rx'),
    oursWideMbits: of('ours-wide', 'rx'),
    qemuMbits: of('qemu', 'rx'),
    ratio: perRound('ours', 'qemu', 'rx'),
    offRatio: perRound('ours-off', 'qemu', 'rx'),
    wideRatio: perRound('ours-wide', 'qemu', 'rx'),
    oursPinnedMbits: of('ours-pinned', 'rx'),
    qemuPinnedMbits: of('qemu-pinned', 'rx'),
    pinnedRatio: perRound('ours-pinned', 'qemu-pinned', 'rx'),
  },
  pingMs: Object.fromEntries(IMPLS.map((i) => [i, { p50: of(i, 'rttP50'), p99: of(i, 'rttP99') }])),
  pingP50Ratio: {
    unpinned: perRound('ours', 'qemu', 'rttP50'),
    pinned: perRound('ours-pinned', 'qemu-pinned', 'rttP50'),
  },
  pinning: `-pinned: QEMU's vCPU thread on core ${VCPU_CORE}; QEMU's other threads and the whole backend (worker --cpus ${EMULATOR_CORE}) on core ${EMULATOR_CORE}`,
  runsByImpl: runs,
});
console.error(
  `guest TCP: guest->host ours ${median(runs.ours.map((x) => x.tx))} (off ${median(runs['ours-off'].map((x) => x.tx))}) vs QEMU ${median(runs.qemu.map((x) => x.tx))} Mbit/s; host->guest ours ${median(runs.ours.map((x) => x.rx))} (off ${median(runs['ours-off'].map((x) => x.rx))}) vs QEMU ${median(runs.qemu.map((x) => x.rx))}; ping p50 ours ${res.pingMs.ours.p50.median} pinned ${res.pingMs['ours-pinned'].p50.median} (QEMU pinned ${res.pingMs['qemu-pinned'].p50.median}) off ${res.pingMs['ours-off'].p50.median} QEMU ${res.pingMs.qemu.p50.median} ms`,
);
console.log(res.guestToHost.ratio.median.toFixed(3));
