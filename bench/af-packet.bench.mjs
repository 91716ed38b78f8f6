// Benchmark: AF_PACKET forwarding, VM-free, 64 and 1518-byte frames, both directions, this tree
// against an older one (BASE_REV, default HEAD~1: built in a temporary worktree) in alternating
// rounds. A veth pair in a namespace we create; the backend (core 0) serves af-packet:vap0.
//   guest-tx: testpmd net_virtio_user txonly (core 1) -> backend -> vap0 -> vap1, counted by
//             vap1's rx_packets.
//   guest-rx: testpmd net_af_packet txonly on vap1 (core 0, beside the backend) -> vap0 ->
//             backend -> testpmd net_virtio_user rxonly (core 1), counted by the latter's
//             Rx-pps. The generator sends all it can, so the backend always finds frames; with
//             it on core 1 instead, the front-end's busy poll and the generator took turns on
//             that core and the guest's ring ran dry between turns (about 65 kpps whatever the
//             backend did).
// This tree runs twice: as by default, and with a variant: qdisc-bypass (guest-tx) or rx-ring
// (guest-rx).
// Beside packets per second, the backend's CPU time per million frames (/proc/PID/stat), and
// its kernel share (stime: the sends, and on a veth the peer's receive, which runs in softirq
// on the sender's core). For guest-tx, `ceiling` is the old tree's whole cost over this tree's
// kernel share: the ratio this tree would reach if its own code took no time at all.
// Prints this tree / the old one, guest-tx 64 B.
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  buildTree,
  cpuSplit,
  median,
  ourBackend,
  ppsSamples,
  root,
  save,
  SECONDS,
  sleep,
  spread,
  steady,
  testpmd,
  tmp,
  waitForFile,
} from './lib.mjs';

const ROUNDS = Number(process.env.VUN_BENCH_RUNS ?? 5);
// Named by its short hash in the results, whatever form it was given in.
const BASE_REV = execFileSync('git', ['-C', root, 'rev-parse', '--short', process.env.BASE_REV ?? 'HEAD~1'], {
  encoding: 'utf8',
}).trim();
const ns = `vun-bench-afp-${process.pid}`;
const VARIANT = { 'guest-tx': 'qdisc-bypass', 'guest-rx': 'rx-ring' };
const sh = (cmd) => spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8' });
const rxPackets = (dev) => Number(sh(`cat /sys/class/net/${dev}/statistics/rx_packets`).stdout.trim() || 0);

async function one(impl, dir, size) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const tree = impl === 'base' ? base.dir : root;
  const spec = impl === 'variant' ? `af-packet:vap0,${VARIANT[dir]}` : 'af-packet:vap0';
  const backend = ourBackend({ socket: sock, backend: spec, cores: '0', netns: ns, tree });
  await waitForFile(sock);
  const procs = [];
  if (dir === 'guest-tx') {
    procs.push(
      testpmd({
        fwdCore: 1,
        mainCore: 0,
        vdevs: [`net_virtio_user0,path=${sock},queues=1`],
        mode: 'txonly',
        txpkts: size,
      }),
    );
  } else {
    procs.push(
      testpmd({
        fwdCore: 1,
        mainCore: 0,
        vdevs: [`net_virtio_user0,path=${sock},queues=1`],
        mode: 'rxonly',
        txpkts: size,
      }),
    );
    await sleep(1000); // the front-end's buffers are offered before the flood starts
    procs.push(
      testpmd({
        fwdCore: 0,
        mainCore: 1,
        netns: ns,
        vdevs: ['net_af_packet0,iface=vap1,qdisc_bypass=1'],
        mode: 'txonly',
        txpkts: size,
      }),
    );
  }
  await sleep(2000);
  const c0 = cpuSplit(backend.child.pid);
  const p0 = rxPackets('vap1');
  const w0 = Date.now();
  await sleep(SECONDS * 1000);
  const wall = (Date.now() - w0) / 1000;
  const c1 = cpuSplit(backend.child.pid);
  const cpu = c1.user - c0.user + c1.sys - c0.sys;
  const viaVeth = (rxPackets('vap1') - p0) / wall;
  for (const p of procs.reverse()) await p.stop();
  await backend.stop();
  t.cleanup();
  const pps = dir === 'guest-tx' ? viaVeth : steady(ppsSamples(procs.at(-1).out, 'Rx')).median;
  if (!pps) throw new Error(`${dir} ${size}: nothing moved\n${backend.out.slice(-1500)}`);
  const perMframe = (sec) => (sec * 1000) / ((pps * wall) / 1e6);
  return { pps, cpuMsPerMframe: perMframe(cpu), sysMsPerMframe: perMframe(c1.sys - c0.sys) };
}

spawnSync('ip', ['netns', 'add', ns]);
sh('ip link add vap0 mtu 9000 type veth peer name vap1 mtu 9000 && ip link set vap0 up && ip link set vap1 up');
const base = buildTree(BASE_REV);
try {
  const cases = [];
  for (const dir of ['guest-tx', 'guest-rx']) {
    for (const size of [64, 1518]) {
      const runs = { new: [], variant: [], base: [] };
      for (let r = 0; r < ROUNDS; r++)
        for (const impl of Object.keys(runs)) runs[impl].push(await one(impl, dir, size));
      const pps = (k) => runs[k].map((x) => x.pps);
      const cpu = (k) => runs[k].map((x) => x.cpuMsPerMframe);
      const sys = (k) => runs[k].map((x) => x.sysMsPerMframe);
      cases.push({
        direction: dir,
        frameBytes: size,
        newMpps: spread(pps('new').map((x) => x / 1e6)),
        variant: VARIANT[dir],
        variantMpps: spread(pps('variant').map((x) => x / 1e6)),
        baseMpps: spread(pps('base').map((x) => x / 1e6)),
        ratio: spread(pps('new').map((x, k) => x / pps('base')[k])),
        variantRatio: spread(pps('variant').map((x, k) => x / pps('base')[k])),
        newCpuMsPerMframe: spread(cpu('new')),
        variantCpuMsPerMframe: spread(cpu('variant')),
        baseCpuMsPerMframe: spread(cpu('base')),
        baseCpuOverNew: spread(cpu('base').map((x, k) => x / cpu('new')[k])),
        newSysMsPerMframe: spread(sys('new')),
        variantSysMsPerMframe: spread(sys('variant')),
        baseSysMsPerMframe: spread(sys('base')),
        ...(dir === 'guest-tx' ? { ceiling: spread(cpu('base').map((x, k) => x / sys('new')[k])) } : {}),
      });
      console.error(
        `af-packet ${dir} ${size} B: new ${(median(pps('new')) / 1e6).toFixed(3)} Mpps (${VARIANT[dir]} ${(median(pps('variant')) / 1e6).toFixed(3)}), ${BASE_REV} ${(median(pps('base')) / 1e6).toFixed(3)} Mpps; CPU ms per Mframe ${median(cpu('new')).toFixed(0)} (kernel ${median(sys('new')).toFixed(0)}) vs ${median(cpu('base')).toFixed(0)} (kernel ${median(sys('base')).toFixed(0)})`,
      );
    }
  }
  const r = save('af-packet', {
    description: `VM-free AF_PACKET forwarding over a veth pair (backend on core 0; testpmd virtio_user on core 1; guest-rx frames from testpmd net_af_packet txonly on the peer, on core 0 beside the backend); this tree (as by default, and with qdisc-bypass for guest-tx or rx-ring for guest-rx) against ${BASE_REV}, alternating rounds; per run the median of per-second samples (guest-rx) or the peer's rx_packets over the window (guest-tx), and the backend's CPU time per million frames`,
    baseRev: BASE_REV,
    rounds: ROUNDS,
    secondsPerRun: SECONDS,
    cases,
  });
  console.log(r.cases[0].ratio.median.toFixed(3));
} finally {
  base.remove();
  spawnSync('ip', ['netns', 'del', ns]);
}
