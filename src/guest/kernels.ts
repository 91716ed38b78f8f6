/**
 * Guest kernels: a Debian `linux-image-*` package (fetched and cached, never installed on the
 * host) or a bzImage the user built, with the virtio-net modules when the kernel has them as
 * modules. What a kernel lacks is named by its option: from its build configuration when one is
 * at hand (the package's, a `config-RELEASE` next to the bzImage, or `--config`), and always from
 * inside the booted guest (init says `VUN-MISSING CONFIG_...`).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { ConfigError, ErrorCode } from '../errors.js';
import { packageRoot } from '../native.js';

export const CACHE = process.env.VUN_CACHE ?? join(homedir(), '.cache', 'vhost-user-net');

/** The kernel the guests boot when none is named: Debian 12's cloud kernel (6.1). */
export const DEFAULT_KERNEL_PACKAGE = 'linux-image-cloud-amd64';

export type KernelSpec = { package: string } | { path: string; modules?: string; config?: string };

export interface GuestKernel {
  /** How the user named it: the package name or the file's path. */
  label: string;
  /** The bzImage QEMU boots. */
  vmlinuz: string;
  /** A cpio archive of the virtio-net modules (lib/modules/*.ko), or none (all built in). */
  modules?: string;
  /** The release the image says it is (`uname -r` in the guest says it again). */
  release: string;
}

/** The options a guest on this device needs (y, or m with the module given). */
const NEEDED: { option: string; module?: string; why: string }[] = [
  { option: 'CONFIG_VIRTIO_PCI', module: 'virtio_pci', why: 'the virtio-net device is a PCI device' },
  { option: 'CONFIG_VIRTIO_NET', module: 'virtio_net', why: 'the driver under test' },
  { option: 'CONFIG_BLK_DEV_INITRD', why: 'the guest runs from an initramfs' },
  { option: 'CONFIG_DEVTMPFS', why: "the guest's init mounts /dev" },
  { option: 'CONFIG_SERIAL_8250_CONSOLE', why: 'results come back on the serial console' },
];

function script(name: string): string {
  return join(packageRoot, 'guest-tests', 'image', name);
}

/** The release string a bzImage carries (its setup header's kernel_version, boot protocol 2.00+). */
export function bzImageRelease(path: string): string | undefined {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(0x10000); // kernel_version points into the setup code (< 64 KiB)
    readSync(fd, head, 0, head.length, 0);
    if (head.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined;
    const at = head.readUInt16LE(0x20e) + 0x200;
    if (at <= 0x200 || at >= head.length) return undefined;
    const end = head.indexOf(0, at);
    return head.toString('latin1', at, end < 0 ? at + 64 : end).split(' ')[0];
  } finally {
    closeSync(fd);
  }
}

/**
 * The options of NEEDED this configuration lacks (a module counts only when `haveModules`).
 * Returns a list of "CONFIG_X (why)" phrases.
 */
export function missingOptions(config: string, haveModules: Set<string>): string[] {
  const value = (o: string) => new RegExp(`^${o}=(y|m)$`, 'm').exec(config)?.[1];
  const out: string[] = [];
  for (const n of NEEDED) {
    const v = value(n.option);
    if (v === 'y') continue;
    if (v === 'm' && n.module && haveModules.has(n.module)) continue;
    const how = v === 'm' ? `=m but no ${n.module}.ko was given (--modules DIR)` : 'is not set';
    out.push(`${n.option} ${how}: ${n.why}`);
  }
  return out;
}

function modulesIn(cgz: string | undefined): Set<string> {
  if (!cgz) return new Set();
  const r = spawnSync('sh', ['-c', `gzip -dc '${cgz}' | busybox cpio -t 2>/dev/null`], { encoding: 'utf8' });
  return new Set(
    r.stdout
      .split('\n')
      .filter((l) => l.endsWith('.ko'))
      .map((l) => basename(l, '.ko')),
  );
}

function checkConfig(label: string, config: string | undefined, modules: string | undefined): void {
  if (!config || !existsSync(config)) return;
  const missing = missingOptions(readFileSync(config, 'utf8'), modulesIn(modules));
  if (missing.length) {
    throw new ConfigError(
      ErrorCode.GuestKernel,
      `kernel ${label} cannot run a virtio-net guest (${config}):\n  ${missing.join('\n  ')}`,
    );
  }
}

/** Fetches (or reuses) a Debian kernel package's bzImage and virtio-net modules. */
function fromPackage(pkg: string): GuestKernel {
  if (!/^linux-image-[A-Za-z0-9.+~_-]+$/.test(pkg)) {
    throw new ConfigError(ErrorCode.GuestKernel, `--kernel-package ${pkg}: not a Debian linux-image-* package name`);
  }
  const out = join(CACHE, 'kernels', pkg);
  const r = spawnSync('bash', [script('fetch-kernel.sh'), pkg, out], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new ConfigError(ErrorCode.GuestKernel, `kernel package ${pkg}: ${(r.stderr || r.stdout).trim()}`);
  }
  const k: GuestKernel = {
    label: pkg,
    vmlinuz: join(out, 'vmlinuz'),
    modules: join(out, 'modules.cgz'),
    release: readFileSync(join(out, 'release'), 'utf8').trim(),
  };
  checkConfig(pkg, join(out, 'config'), k.modules);
  return k;
}

/** A bzImage given as a file, with its modules from a directory when virtio is not built in. */
function fromPath(spec: { path: string; modules?: string; config?: string }): GuestKernel {
  const path = resolve(spec.path);
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new ConfigError(ErrorCode.GuestKernel, `--kernel ${spec.path}: no such file`);
  }
  const release = bzImageRelease(path);
  if (!release) {
    throw new ConfigError(
      ErrorCode.GuestKernel,
      `--kernel ${spec.path}: not an x86 bzImage (no "HdrS" setup header; give arch/x86/boot/bzImage or /boot/vmlinuz-*)`,
    );
  }
  let modules: string | undefined;
  if (spec.modules) {
    if (!existsSync(spec.modules))
      throw new ConfigError(ErrorCode.GuestKernel, `--modules ${spec.modules}: no such directory`);
    const dir = mkdtempSync(join(tmpdir(), 'vun-modules-'));
    modules = join(dir, 'modules.cgz');
    const r = spawnSync('bash', [script('pack-modules.sh'), resolve(spec.modules), modules], { encoding: 'utf8' });
    if (r.status !== 0) throw new ConfigError(ErrorCode.GuestKernel, `--modules ${spec.modules}: ${r.stderr.trim()}`);
  }
  const config = spec.config ?? [join(dirname(path), `config-${release}`)].find((c) => existsSync(c));
  checkConfig(spec.path, config, modules);
  return { label: spec.path, vmlinuz: path, ...(modules ? { modules } : {}), release };
}

export function resolveKernel(spec: KernelSpec = { package: DEFAULT_KERNEL_PACKAGE }): GuestKernel {
  return 'package' in spec ? fromPackage(spec.package) : fromPath(spec);
}

/** What init said about the kernel it runs on: its release and the options it lacks. */
export function kernelReport(consoleText: string): { release?: string; missing: string[] } {
  const release = /VUN-KERNEL (\S+)/.exec(consoleText)?.[1];
  const missing = [...consoleText.matchAll(/VUN-MISSING (CONFIG_\w+)/g)].map((m) => m[1] as string);
  return { ...(release ? { release } : {}), missing };
}
