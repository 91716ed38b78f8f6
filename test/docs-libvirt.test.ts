/**
 * docs/libvirt.md shows the domain guest-tests/libvirt.test.ts defines: its XML blocks are the
 * output of `domainXml` for the documented parameters (KVM, and the TCG override).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { domainXml, type DomainOptions } from '../src/guest/libvirt.js';
import { packageRoot } from '../src/native.js';

const DOC: Omit<DomainOptions, 'type'> = {
  name: 'vm1',
  memMiB: 2048,
  queuePairs: 2,
  socket: '/run/vhost-user-net/vm1.sock',
  mac: '52:54:00:12:34:56',
  kernel: '/var/lib/libvirt/boot/vmlinuz',
  initrd: '/var/lib/libvirt/boot/initrd.img',
  cmdline: 'console=ttyS0 root=/dev/vda',
  console: '/var/log/libvirt/vm1-console.log',
};

describe('docs/libvirt.md', () => {
  const blocks = [
    ...readFileSync(join(packageRoot, 'docs', 'libvirt.md'), 'utf8').matchAll(/```xml\n([\s\S]*?)```/g),
  ].map((m) => m[1] as string);
  it('shows the domain the test defines (KVM)', () => {
    expect(blocks[0]).toBe(domainXml({ ...DOC, type: 'kvm' }));
  });
  it('shows the override the test adds under TCG', () => {
    const tcg = domainXml({ ...DOC, type: 'qemu' });
    expect(tcg).toContain(blocks[1]?.trimEnd());
    expect(tcg).toContain("<domain type='qemu'");
    expect(domainXml({ ...DOC, type: 'kvm' })).not.toContain('qemu:override');
    // The page names the other two TCG changes the test's domain makes.
    const page = readFileSync(join(packageRoot, 'docs', 'libvirt.md'), 'utf8');
    expect(tcg).toContain("<cpu mode='maximum'/>");
    expect(page).toContain("`<cpu mode='maximum'/>` instead of `host-passthrough`");
    expect(page).toContain("`<domain type='qemu'>`");
  });
});
