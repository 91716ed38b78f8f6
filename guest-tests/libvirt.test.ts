/**
 * libvirt runs the guest: the test starts libvirtd itself (Debian's libvirt-daemon-system, no
 * service manager), defines the domain of docs/libvirt.md (an interface of type vhostuser, RAM
 * shared through a memfd) with the test guest, starts it and waits for the guest to ping the
 * host through the backend, then destroys and undefines it and stops libvirtd. libvirt runs
 * QEMU as its own user (libvirt-qemu): the backend's socket is 0660 with group libvirt-qemu,
 * the way docs/privileges.md says to do it. A libvirtd that cannot run fails the test with the
 * reason.
 */
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { guestResults, Netns, requireRoot, scenarioBoot, startBackend, waitForLink } from '../src/guest/guest.js';
import { domainType, domainXml, qemuLogOf, startLibvirtd, virsh } from '../src/guest/libvirt.js';
import { waitFor } from '../test/helpers/harness.js';

const HOST_IP = '10.81.0.1';
const GUEST_IP = '10.81.0.2';
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  // Every cleanup runs, even after one fails: the daemons and the domain must not outlive the test.
  const errors: unknown[] = [];
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length) throw errors[0];
});

describe('libvirt', () => {
  it('starts a domain with a vhostuser interface on the backend; the guest pings through it', async () => {
    requireRoot('the libvirt test');
    // A directory libvirt's QEMU (libvirt-qemu:kvm) can read and write: kernel, initrd,
    // the console file and the backend's socket live there.
    const dir = mkdtempSync(join(tmpdir(), 'vun-libvirt-'));
    chmodSync(dir, 0o777);
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const daemons = await startLibvirtd(dir);
    cleanups.push(() => Promise.all(daemons.map((d) => d.stop())));

    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const sock = join(dir, 'vhost.sock');
    const backend = startBackend(ns, sock, [
      '--backend',
      'tap:vunL',
      '--socket-group',
      'libvirt-qemu',
      '--socket-mode',
      '0660',
    ]);
    cleanups.push(() => backend.stop());
    await waitForLink(ns, 'vunL');
    ns.sh(`ip addr add ${HOST_IP}/24 dev vunL && ip link set vunL up`);
    await waitFor(() => existsSync(sock), 15_000, 'the backend socket');

    const boot = scenarioBoot({
      ip: `${GUEST_IP}/24`,
      script: `ping -c 3 -W 3 ${HOST_IP} > /tmp/p 2>&1; res ping $? "$(tail -2 /tmp/p | tr '\\n' ' ')"\n`,
    });
    cleanups.push(() => rmSync(boot.dir, { recursive: true, force: true }));
    const kernel = join(dir, 'vmlinuz');
    const initrd = join(dir, 'initrd.img');
    copyFileSync(boot.kernel, kernel);
    copyFileSync(boot.initrd, initrd);
    const consoleFile = join(dir, 'console.log');
    const name = `vun-test-${process.pid}`;
    const xml = join(dir, 'domain.xml');
    writeFileSync(
      xml,
      domainXml({
        name,
        memMiB: 256,
        queuePairs: 1,
        socket: sock,
        mac: '52:54:00:12:34:56',
        kernel,
        initrd,
        cmdline: boot.append,
        console: consoleFile,
        type: domainType(),
      }),
    );
    virsh(['define', xml]);
    cleanups.push(() => void virsh(['undefine', name]));
    try {
      virsh(['start', name]);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nlibvirt's QEMU log:\n${qemuLogOf(name)}`);
    }
    // The guest powers off after its scenario; destroy only what still runs.
    cleanups.push(() => {
      // It may power off between the two calls: only a domain still running afterwards is an error.
      if (virsh(['domstate', name]).trim() !== 'running') return;
      try {
        virsh(['destroy', name]);
      } catch (err) {
        if (virsh(['domstate', name]).trim() === 'running') throw err;
      }
    });
    // QEMU runs as libvirt's user, not root, and reaches the 0660 socket through its group.
    const qemuPid = Number(readFileSync(`/run/libvirt/qemu/${name}.pid`, 'utf8').trim());
    const qemuUid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${qemuPid}/status`, 'utf8'))?.[1]);
    expect(qemuUid).not.toBe(0);
    const text = () => (existsSync(consoleFile) ? readFileSync(consoleFile, 'utf8') : '');
    await waitFor(() => text().includes('VUN-DONE'), 180_000, 'the guest under libvirt').catch((e: Error) => {
      throw new Error(
        `${e.message}\nconsole:\n${text().slice(-3000)}\nbackend:\n${backend.tail(20)}\nQEMU log:\n${qemuLogOf(name)}`,
      );
    });
    const r = guestResults(text());
    const ctx = `console:\n${text().slice(-2000)}\nbackend:\n${backend.tail(20)}`;
    expect(r.get('ping')?.rc, ctx).toBe(0);
    expect(backend.output, ctx).toMatch(/"msg":"vring processing"/);
    console.log(`guest result: ${JSON.stringify({ test: 'libvirt', ping: r.get('ping'), qemuUid })}`);
  }, 300_000);
});
