// Shared benchmark plumbing: start processes pinned to cores, read testpmd's per-second stats,
// medians and spread, machine facts, JSON results in bench/results/. Never used by tests.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const resultsDir = join(root, 'bench', 'results');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let prefixN = 0;
/** A process we started; stopped by its own pid. */
export function start(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  const p = { child, out: '', exited: false };
  child.stdout.on('data', (d) => (p.out += d));
  child.stderr.on('data', (d) => (p.out += d));
  p.done = new Promise((r) => child.once('exit', () => ((p.exited = true), r())));
  p.stop = async (sig = 'SIGINT') => {
    if (p.exited) return;
    process.kill(child.pid, sig);
    const t = setTimeout(() => !p.exited && process.kill(child.pid, 'SIGKILL'), 8000);
    await p.done;
    clearTimeout(t);
  };
  return p;
}

/** testpmd as a front-end (virtio_user) or backend (net_vhost), its forwarding core pinned. */
export function testpmd({ fwdCore, mainCore, vdevs, mode, txpkts = 64, queues = 1, extra = [], netns }) {
  const args = [
    '-l',
    `${fwdCore},${mainCore}`,
    '--main-lcore',
    String(mainCore),
    '--no-pci',
    '--no-huge',
    '-m',
    '512',
    '--file-prefix',
    `vun-bench-${process.pid}-${++prefixN}`,
    ...vdevs.flatMap((v) => ['--vdev', v]),
    '--',
    `--forward-mode=${mode}`,
    `--txpkts=${txpkts}`,
    `--rxq=${queues}`,
    `--txq=${queues}`,
    '--total-num-mbufs=32768',
    '--stats-period',
    '1',
    ...extra,
  ];
  return netns ? start('ip', ['netns', 'exec', netns, 'dpdk-testpmd', ...args]) : start('dpdk-testpmd', args);
}

/** Per-second "Rx-pps"/"Tx-pps" samples of port `port` from testpmd's periodic stats. */
/**
 * The front-end of the VM-free benchmarks: testpmd with net_virtio_user (it plays QEMU and the
 * guest driver) on `sock`, forwarding on core 1, in `mode` (txonly: the guest sends; rxonly:
 * the guest receives) with `size`-byte frames.
 */
export function virtioUserFrontend(sock, mode, size = 64, { queues = 1, extra = [] } = {}) {
  return testpmd({
    fwdCore: 1,
    mainCore: 0,
    vdevs: [`net_virtio_user0,path=${sock},queues=${queues}`],
    mode,
    txpkts: size,
    queues,
    extra,
  });
}

export function ppsSamples(out, which, port = 0) {
  const blocks = out
    .split('NIC statistics for port ')
    .slice(1)
    .filter((b) => b.startsWith(`${port} `));
  return blocks.map((b) => Number(new RegExp(`${which}-pps:\\s+(\\d+)`).exec(b)?.[1] ?? 0));
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : 0;
}

/** Median of the steady samples (the first ones are start-up) and their spread. */
export function steady(samples, skip = 2) {
  const xs = samples.slice(skip).filter((x) => x > 0);
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

export function ourBackend({ socket, backend, queues = 1, cores = '0', netns, extra = [], tree = root }) {
  const args = [
    '-c',
    cores,
    process.execPath,
    join(tree, 'bin', 'vhost-user-net.js'),
    '--socket',
    socket,
    '--backend',
    backend,
    '--queues',
    String(queues),
    '--log-level',
    'warn',
    ...extra,
  ];
  return netns ? start('ip', ['netns', 'exec', netns, 'taskset', ...args]) : start('taskset', args);
}

export async function waitForFile(path, ms = 15000) {
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new Error(`${path} did not appear`);
    await sleep(50);
  }
}

export function tmp() {
  const dir = mkdtempSync(join(tmpdir(), 'vun-bench-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function firstLine(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return (r.stdout || r.stderr || '').split('\n')[0].trim();
}

let costs;
/**
 * What this machine charges for the parts of our data path (native/machine_costs.cc): a system
 * call's entry and exit, an eventfd wake of a blocked thread, a 64-byte frame written to a TAP
 * (one in a namespace made for it). Measured once per benchmark process; null when it cannot be.
 */
export function machineCosts() {
  if (costs !== undefined) return costs;
  const ns = `vun-cost-${process.pid}`;
  spawnSync('ip', ['netns', 'add', ns]);
  try {
    const script = `
      import { execFileSync } from 'node:child_process';
      import { loadNative } from ${JSON.stringify(join(root, 'dist', 'native.js'))};
      const n = loadNative();
      const { fd } = n.tapOpen('vcost0', { vnetHdr: false, multiQueue: false });
      execFileSync('ip', ['link', 'set', 'vcost0', 'up']);
      console.log(JSON.stringify(n.machineCosts(fd)));`;
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
    });
    const c = JSON.parse(r.stdout.trim().split('\n').pop());
    costs = Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Math.round(v * 10) / 10]));
  } catch {
    costs = null;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
  return costs;
}

export function machine() {
  return {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    kernel: release(),
    node: process.version,
    qemu: firstLine('qemu-system-x86_64', ['--version']),
    dpdk: firstLine('dpkg-query', ['-W', '-f=${Version}', 'dpdk-dev']),
    kvm: existsSync('/dev/kvm') && !existsSync('/sys/module/kvm_pvm') ? 'kvm' : 'tcg (no usable KVM)',
    costs: machineCosts(),
  };
}

export function save(name, result) {
  mkdirSync(resultsDir, { recursive: true });
  const data = { benchmark: name, machine: machine(), ...result };
  writeFileSync(join(resultsDir, `${name}.json`), `${JSON.stringify(data, null, 2)}\n`);
  return data;
}

export function load(name) {
  const f = join(resultsDir, `${name}.json`);
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) : undefined;
}

export const RUNS = Number(process.env.VUN_BENCH_RUNS ?? 3);
export const SECONDS = Number(process.env.VUN_BENCH_SECONDS ?? 6);

/**
 * An older tree of this repository (git rev), checked out in a temporary worktree and built
 * (addon and dist/), to be measured against this one in the same run. `remove()` deletes it.
 */
export function buildTree(rev) {
  const dir = mkdtempSync(join(tmpdir(), 'vun-baseline-'));
  execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', dir, rev], { stdio: 'ignore' });
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  execFileSync(process.execPath, [join(dir, 'scripts', 'build-native.mjs')], { cwd: dir, stdio: 'ignore' });
  execFileSync(
    process.execPath,
    [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: dir,
      stdio: 'ignore',
    },
  );
  return {
    dir,
    remove: () => {
      execFileSync('git', ['-C', root, 'worktree', 'remove', '--force', dir], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * CPU time of process `pid` in seconds, in user space and in the kernel (/proc/PID/stat fields
 * 14 utime and 15 stime, USER_HZ ticks). The kernel's share is the system calls' work (a TAP
 * write climbs the host's stack in the writer's context) and softirqs that run on the thread.
 */
export function cpuSplit(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may hold spaces.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
}

/** utime + stime of process `pid`, in seconds. */
export function cpuSeconds(pid) {
  const c = cpuSplit(pid);
  return c.user + c.sys;
}

/** Machine-wide stolen time in seconds (/proc/stat `cpu` line, 8th value): the hypervisor's share. */
export function stealSeconds() {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/);
  return Number(cpu[8]) / 100;
}

/**
 * One VM-free ring run: a backend (ours: vhost-user-net with the null backend, worker on core 0;
 * dpdk: testpmd net_vhost, forwarding core 0) served by testpmd's net_virtio_user on core 1 for
 * SECONDS after 2 s of start-up. Returns the front-end's packets per second (median of steady
 * per-second samples), the backend's CPU time per million frames over the same window, and the
 * machine's stolen CPU share over it (a round the hypervisor starved shows here).
 */
export async function ringRun({ impl, dir, size, packed = false, extra = [], tree = root }) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const backend =
    impl === 'dpdk'
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
          tree,
        });
  await waitForFile(sock);
  const fe = testpmd({
    fwdCore: 1,
    mainCore: 0,
    vdevs: [`net_virtio_user0,path=${sock},queues=1${packed ? ',packed_vq=1' : ''}`],
    mode: dir === 'guest-rx' ? 'rxonly' : 'txonly',
    txpkts: size,
  });
  await sleep(2000);
  const cpu0 = cpuSeconds(backend.child.pid);
  const steal0 = stealSeconds();
  const w0 = Date.now();
  await sleep(SECONDS * 1000);
  const cpu1 = cpuSeconds(backend.child.pid);
  const steal1 = stealSeconds();
  const wall = (Date.now() - w0) / 1000;
  await fe.stop();
  await backend.stop();
  t.cleanup();
  const s = steady(ppsSamples(fe.out, dir === 'guest-rx' ? 'Rx' : 'Tx'));
  if (!s.n) throw new Error(`${impl} ${dir} ${size}: no samples\n${fe.out.slice(-1500)}\n${backend.out.slice(-1500)}`);
  const frames = s.median * wall;
  return {
    pps: s.median,
    cpuMsPerMframe: ((cpu1 - cpu0) * 1000) / (frames / 1e6),
    stealShare: (steal1 - steal0) / (wall * cpus().length),
  };
}

/**
 * vhost-user -> TAP forwarding, one backend core: testpmd's virtio_user sends 64 B frames
 * (txonly) to our backend on tap:vbt0 in a namespace of its own; frames counted on the TAP.
 * Returns frames per second and the backend's CPU ms per million frames.
 */
export async function tapRun({ tree = root, extra = [] } = {}) {
  const ns = `vun-bench-${process.pid}`;
  const sh = (cmd) => spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8' });
  const rxPackets = () => Number(sh('cat /sys/class/net/vbt0/statistics/rx_packets').stdout.trim() || 0);
  spawnSync('ip', ['netns', 'add', ns]);
  const t = tmp();
  try {
    const sock = join(t.dir, 'vhost.sock');
    const backend = ourBackend({ socket: sock, backend: 'tap:vbt0', cores: '0', netns: ns, tree, extra });
    await waitForFile(sock);
    const fe = virtioUserFrontend(sock, 'txonly', 64);
    for (let i = 0; i < 200 && sh('ip link show vbt0').status !== 0; i++) await sleep(50);
    sh('ip link set vbt0 up');
    await sleep(2000);
    const a = rxPackets();
    const cpu0 = cpuSeconds(backend.child.pid);
    const t0 = Date.now();
    await sleep(SECONDS * 1000);
    const frames = rxPackets() - a;
    const cpu1 = cpuSeconds(backend.child.pid);
    const pps = frames / ((Date.now() - t0) / 1000);
    await fe.stop();
    await backend.stop();
    return { pps, cpuMsPerMframe: ((cpu1 - cpu0) * 1000) / (frames / 1e6) };
  } finally {
    t.cleanup();
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

/** Median, min and max of a list. */
export function spread(xs) {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/** Each thread of process `pid` as { tid, comm }. */
export function threadsOf(pid) {
  return readdirSync(`/proc/${pid}/task`).map((tid) => ({
    tid,
    comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(),
  }));
}

/** QEMU's vCPU threads, as `-name NAME,debug-threads=on` names them ("CPU 0/TCG", "CPU 1/KVM"). */
const VCPU_THREAD = /^CPU \d+\//;

/** Pins every thread of process `pid` to `core` (as systemd's CPUAffinity= would). */
export function pinProcess(pid, core) {
  execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
}

/**
 * Pins a QEMU started with `-name NAME,debug-threads=on` as libvirt's <vcpupin> and <emulatorpin>
 * do: its vCPU threads on `vcpuCore`, the main loop and the rest on `emulatorCore`. Waits for the
 * vCPU thread to exist (QEMU creates it during machine start-up).
 */
export async function pinQemu(pid, { vcpuCore, emulatorCore }, ms = 15000) {
  const until = Date.now() + ms;
  let vcpus;
  while (!(vcpus = threadsOf(pid).filter((t) => VCPU_THREAD.test(t.comm))).length) {
    if (Date.now() > until) throw new Error(`QEMU ${pid}: no vCPU thread after ${ms} ms`);
    await sleep(5);
  }
  pinProcess(pid, emulatorCore);
  for (const t of vcpus) execFileSync('taskset', ['-p', '-c', String(vcpuCore), t.tid], { stdio: 'ignore' });
  return vcpus;
}
