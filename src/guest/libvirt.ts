/**
 * libvirt for tests and docs: the domain XML of a guest on vhost-user-net (docs/libvirt.md
 * shows its output for the documented parameters, and a test holds the two together), and a
 * libvirtd the test starts itself, as root, without a service manager.
 */
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Proc, requireCommand } from '../util/proc.js';
import { realKvm } from './qemu.js';

export interface DomainOptions {
  name: string;
  memMiB: number;
  queuePairs: number;
  /** The backend's socket (it listens; QEMU connects: libvirt's mode='client'). */
  socket: string;
  mac: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** The serial console goes to this file. */
  console: string;
  /** 'kvm' with a usable /dev/kvm, else 'qemu' (TCG). */
  type: 'kvm' | 'qemu';
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

/**
 * The domain. What vhost-user needs: guest RAM shared with the backend (memfd, access
 * shared), an interface of type vhostuser with the backend's socket, and queues. Under TCG,
 * QEMU 7.2 must not give the NIC MSI-X vectors (it crashes at DRIVER_OK): the override sets
 * vectors=0 (INTx), which a KVM host does not need.
 */
export function domainXml(o: DomainOptions): string {
  const tcg = o.type === 'qemu';
  const override = tcg
    ? `
  <qemu:override>
    <qemu:device alias='ua-net0'>
      <qemu:frontend>
        <qemu:property name='vectors' type='unsigned' value='0'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>`
    : '';
  return `<domain type='${o.type}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${esc(o.name)}</name>
  <memory unit='MiB'>${o.memMiB}</memory>
  <vcpu>${o.queuePairs}</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${esc(o.kernel)}</kernel>
    <initrd>${esc(o.initrd)}</initrd>
    <cmdline>${esc(o.cmdline)}</cmdline>
  </os>
  <cpu mode='${tcg ? 'maximum' : 'host-passthrough'}'/>
  <devices>
    <interface type='vhostuser'>
      <mac address='${o.mac}'/>
      <source type='unix' path='${esc(o.socket)}' mode='client'/>
      <model type='virtio'/>
      <driver queues='${o.queuePairs}'/>
      <alias name='ua-net0'/>
    </interface>
    <serial type='file'>
      <source path='${esc(o.console)}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>${override}
</domain>
`;
}

/** 'kvm' where KVM is real, else 'qemu' (TCG), as the guest tests decide. */
export function domainType(): 'kvm' | 'qemu' {
  return realKvm() ? 'kvm' : 'qemu';
}

export const LIBVIRT_SOCK = '/run/libvirt/libvirt-sock';
const VIRTLOGD_SOCK = '/run/libvirt/virtlogd-sock';

/** virsh against the system instance; throws with its output on failure. */
export function virsh(args: string[]): string {
  const r = spawnSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`virsh ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

/**
 * Starts libvirtd (the system instance) and virtlogd in the foreground as our children (the
 * caller stops both, each by its pid) and waits until virsh reaches libvirtd. Throws, saying
 * exactly why, when it cannot: not installed, another libvirtd already running, or it exits.
 */
export async function startLibvirtd(pidDir: string): Promise<Proc[]> {
  const bin = requireCommand('libvirtd', 'libvirt-daemon-system');
  const logd = requireCommand('virtlogd', 'libvirt-daemon-system');
  requireCommand('virsh', 'libvirt-clients');
  if (existsSync(LIBVIRT_SOCK) && spawnSync('virsh', ['-c', 'qemu:///system', 'version']).status === 0) {
    throw new Error(
      `a libvirtd is already running (${LIBVIRT_SOCK} answers): this test starts its own; stop the other first`,
    );
  }
  // virtlogd keeps QEMU's output (systemd starts it on demand; here we do).
  const log = new Proc(logd, ['--pid-file', join(pidDir, 'virtlogd.pid')]);
  const p = new Proc(bin, ['--pid-file', join(pidDir, 'libvirtd.pid')]);
  const end = Date.now() + 20_000;
  for (;;) {
    const gone = [log, p].find((x) => !x.running);
    if (gone) {
      await Promise.all([log.stop(), p.stop()]);
      throw new Error(
        `${gone === p ? 'libvirtd' : 'virtlogd'} exited (${gone.exitCode}) before serving:\n${gone.tail(30)}`,
      );
    }
    if (existsSync(VIRTLOGD_SOCK) && spawnSync('virsh', ['-c', 'qemu:///system', 'version']).status === 0)
      return [p, log];
    if (Date.now() > end) {
      await Promise.all([log.stop(), p.stop()]);
      throw new Error(`libvirtd did not answer on ${LIBVIRT_SOCK} within 20 s:\n${p.tail(30)}\n${log.tail(10)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** libvirt's own log of a domain's QEMU (why a start failed). */
export function qemuLogOf(name: string): string {
  const f = `/var/log/libvirt/qemu/${name}.log`;
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').slice(-30).join('\n') : `(no ${f})`;
}
