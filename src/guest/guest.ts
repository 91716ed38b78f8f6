/**
 * Real Linux guests on the backend (tests and the demo): the guest image (built from Debian
 * packages, cached), network namespaces we create for the host end, the backend run as a real
 * process inside one, and scenario scripts the guest runs and reports on over its console.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../native.js';
import { Proc, requireCommand } from '../util/proc.js';
import { waitFor } from '../util/wait.js';
import { CACHE, type GuestKernel, resolveKernel } from './kernels.js';
import { startQemu, type QemuOptions } from './qemu.js';

export { CACHE } from './kernels.js';

export function requireRoot(what = 'guest tests'): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`${what} need root (network namespaces, TAP devices): run as root`);
  }
}

let defaultKernel: GuestKernel | undefined;

/**
 * Builds (or reuses) the guest's user space (a busybox initramfs without modules) and resolves
 * the kernel: `kernel`, or Debian 12's cloud kernel.
 */
export function guestImage(kernel?: GuestKernel): { kernel: GuestKernel; initramfs: string } {
  const out = join(CACHE, 'guest');
  const r = spawnSync('bash', [join(packageRoot, 'guest-tests', 'image', 'build-guest.sh'), out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the guest image failed:\n${r.stdout}\n${r.stderr}`);
  const k = kernel ?? (defaultKernel ??= resolveKernel());
  return { kernel: k, initramfs: join(out, 'initramfs.cgz') };
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

let nsCount = 0;

/** A network namespace of our own; everything in it is deleted with it. */
export class Netns {
  readonly name: string;
  /** `name`: a fixed name (the lab's, for copy-paste commands); by default one of our own. */
  constructor(name?: string) {
    this.name = name ?? `vun-${process.pid}-${++nsCount}`;
    requireCommand('ip', 'iproute2');
    run('ip', ['netns', 'add', this.name]);
    this.sh('ip link set lo up');
  }
  /** Runs a command line inside the namespace; throws on failure. */
  sh(cmdline: string): string {
    return run('ip', ['netns', 'exec', this.name, 'sh', '-c', cmdline]);
  }
  /** Runs a command line inside the namespace and returns its status and output. */
  try(cmdline: string): { status: number | null; out: string } {
    const r = spawnSync('ip', ['netns', 'exec', this.name, 'sh', '-c', cmdline], { encoding: 'utf8' });
    return { status: r.status, out: r.stdout + r.stderr };
  }
  /** As `try`, without blocking the event loop (other guests keep being watched meanwhile). */
  run(cmdline: string, timeoutMs = 30_000): Promise<{ status: number | null; out: string }> {
    return new Promise((resolve) => {
      execFile(
        'ip',
        ['netns', 'exec', this.name, 'sh', '-c', cmdline],
        { timeout: timeoutMs },
        (err, stdout, stderr) => {
          const status = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
          resolve({ status, out: String(stdout) + String(stderr) });
        },
      );
    });
  }
  spawn(cmd: string, args: string[]): Proc {
    return new Proc('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }
  delete(): void {
    spawnSync('ip', ['netns', 'del', this.name]);
  }
}

/** Starts the real backend (bin/vhost-user-net.js) inside `ns`. */
export function startBackend(ns: Netns, socketPath: string, args: string[]): Proc {
  const bin = join(packageRoot, 'bin', 'vhost-user-net.js');
  if (!existsSync(join(packageRoot, 'dist', 'cli', 'main.js'))) throw new Error('dist/ missing: run npm run build');
  return ns.spawn(process.execPath, [bin, '--socket', socketPath, '--log-level', 'info', ...args]);
}

export async function waitForLink(ns: Netns, dev: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(() => ns.try(`ip link show ${dev}`).status === 0, timeoutMs, `${dev} in ${ns.name}`);
}

/** The guest's shell prelude: `res NAME RC [TEXT]` reports a result line. */
const PRELUDE = `#!/bin/sh
res() { n=$1; shift; echo "VUN-RESULT $n $*"; }
phase() { echo "VUN-PHASE $1"; }
arg() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
`;

export interface GuestRun {
  qemu: Proc;
  /** What the guest booted: a second QEMU (a migration's destination) must be given the same. */
  guest: { kernel: string; initrd: string; append: string };
  /** Resolves when the guest printed `VUN-PHASE name`. */
  phase(name: string, timeoutMs?: number): Promise<void>;
  /** Resolves with the results once the guest printed VUN-DONE. */
  done(timeoutMs?: number): Promise<Map<string, { rc: number; text: string }>>;
  cleanup(): Promise<void>;
}

/** The `VUN-RESULT name rc text` lines a scenario printed on a console. */
export function guestResults(consoleText: string): Map<string, { rc: number; text: string }> {
  const m = new Map<string, { rc: number; text: string }>();
  for (const line of consoleText.split('\n')) {
    const r = /VUN-RESULT (\S+) (-?\d+) ?(.*)/.exec(line.replace(/\r$/, ''));
    if (r) m.set(r[1] as string, { rc: Number(r[2]), text: r[3] ?? '' });
  }
  return m;
}

export interface ScenarioOptions {
  script: string;
  ip: string;
  mtu?: number;
  /** The guest kernel's warnings and errors on the console (QEMU's output), not only in dmesg. */
  kernelLog?: boolean;
  /** virtio_net's pr_debug lines on (dynamic debug from the command line). */
  dyndbg?: boolean;
  /** More kernel command-line arguments. */
  append?: string[];
  /** The kernel to boot (resolveKernel); default Debian 12's cloud kernel. */
  kernel?: GuestKernel;
}

/**
 * The files a guest running `script` boots from: the kernel, an initrd with the script as
 * /scenario.sh (a second cpio archive after the base one) in a fresh directory (`dir`, removed
 * by the caller), and the kernel command line.
 */
export function scenarioBoot(o: ScenarioOptions): { kernel: string; initrd: string; append: string; dir: string } {
  const img = guestImage(o.kernel);
  const dir = mkdtempSync(join(tmpdir(), 'vun-guest-'));
  const sdir = join(dir, 'root');
  spawnSync('mkdir', ['-p', sdir]);
  writeFileSync(join(sdir, 'scenario.sh'), PRELUDE + o.script);
  chmodSync(join(sdir, 'scenario.sh'), 0o755);
  const cpio = spawnSync('sh', ['-c', `cd ${sdir} && echo scenario.sh | busybox cpio -o -H newc 2>/dev/null | gzip`], {
    maxBuffer: 1 << 20,
  });
  const initrd = join(dir, 'initrd.img');
  // cpio archives one after another: the user space, the kernel's modules, the scenario.
  const modules = img.kernel.modules ? [readFileSync(img.kernel.modules)] : [];
  writeFileSync(initrd, Buffer.concat([readFileSync(img.initramfs), ...modules, cpio.stdout]));
  const append = [
    'console=ttyS0',
    o.kernelLog ? 'loglevel=5' : 'quiet',
    'panic=-1',
    `vun.ip=${o.ip}`,
    ...(o.mtu ? [`vun.mtu=${o.mtu}`] : []),
    ...(o.dyndbg ? ['virtio_net.dyndbg=+p'] : []),
    ...(o.append ?? []),
  ].join(' ');
  return { kernel: img.kernel.vmlinuz, initrd, append, dir };
}

/** Boots the guest with `script` as /scenario.sh, under QEMU started here. */
export function bootGuest(o: Omit<QemuOptions, 'guest'> & ScenarioOptions): GuestRun {
  const { dir, ...guest } = scenarioBoot(o);
  const qemu = startQemu({ ...o, guest });
  const results = () => guestResults(qemu.output);
  return {
    qemu,
    guest,
    phase: async (name, timeoutMs = 120_000) => {
      try {
        await waitFor(
          () => qemu.output.includes(`VUN-PHASE ${name}`) || !qemu.running,
          timeoutMs,
          `guest phase ${name}`,
        );
      } catch (e) {
        throw new Error(`${(e as Error).message}\nguest console:\n${qemu.tail(60)}`);
      }
      if (!qemu.output.includes(`VUN-PHASE ${name}`))
        throw new Error(`QEMU exited before phase ${name}:\n${qemu.tail(60)}`);
    },
    done: async (timeoutMs = 300_000) => {
      try {
        await waitFor(() => qemu.output.includes('VUN-DONE') || !qemu.running, timeoutMs, 'guest scenario');
      } catch (e) {
        throw new Error(`${(e as Error).message}\nguest console:\n${qemu.tail(60)}`);
      }
      if (!qemu.output.includes('VUN-DONE')) throw new Error(`QEMU exited early:\n${qemu.tail(60)}`);
      return results();
    },
    cleanup: async () => {
      await qemu.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** "X Mbits/sec" (or Gbits) from an iperf3 receiver line, in Mbit/s. */
export function mbits(text: string): number {
  const m = /([\d.]+) ([KMG])bits\/sec/.exec(text);
  if (!m) return 0;
  const scale = { K: 1e-3, M: 1, G: 1e3 }[m[2] as 'K' | 'M' | 'G'];
  return Number(m[1]) * scale;
}
