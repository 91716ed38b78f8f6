/**
 * Starting QEMU against our backend. The guest may be only firmware: SeaBIOS's iPXE option
 * ROM drives virtio-net (features, memory, rings, a kick) when it tries a network boot, so a
 * real QEMU exercises the whole vhost-user start-up without a guest kernel.
 */
import { existsSync } from 'node:fs';
import { Proc, requireCommand } from '../util/proc.js';

/** Real KVM only: a nested PVM hypervisor (kvm_pvm) emulates too slowly to count. */
export function realKvm(): boolean {
  return existsSync('/dev/kvm') && !existsSync('/sys/module/kvm_pvm');
}

export interface QemuOptions {
  socketPath: string;
  /** QEMU listens (server=on,wait=off) and the backend dials. */
  qemuServer?: boolean;
  /** QEMU redials a lost backend every second (reconnect=1). */
  reconnect?: boolean;
  queuePairs?: number;
  memMiB?: number;
  /**
   * Use QEMU's own virtio-net on this TAP (`-netdev tap,vhost=off`) instead of vhost-user: the
   * anchor of the guest TCP benchmark. QEMU then runs inside `netns`, where the TAP lives.
   */
  builtinTap?: string;
  netns?: string;
  /** QEMU's host_mtu: offers VIRTIO_NET_F_MTU to the guest and sends NET_SET_MTU. */
  hostMtu?: number;
  /** packed=on: QEMU offers VIRTIO_F_RING_PACKED to the guest (when the backend does). */
  packed?: boolean;
  /** Boot a Linux guest (kernel, initrd, command line) instead of the firmware's iPXE. */
  guest?: { kernel: string; initrd: string; append: string };
  smp?: number;
  extraArgs?: string[];
  /** Run QEMU as this user and group (setpriv), as libvirt runs it: unprivileged. */
  runAs?: { uid: number; gid: number };
  /** The guest's console takes input from QEMU's stdin (Proc.write): a running guest script can be told things. */
  input?: boolean;
}

export function qemuArgs(o: QemuOptions): string[] {
  const mem = o.memMiB ?? 256;
  const q = o.queuePairs ?? 1;
  let chardev = `socket,id=c0,path=${o.socketPath}`;
  if (o.qemuServer) chardev += ',server=on,wait=off';
  else if (o.reconnect) chardev += ',reconnect=1';
  // Under TCG, QEMU 7.2 + vhost-user + MSI-X crashes at DRIVER_OK: use INTx (vectors=0).
  const kvm = realKvm();
  const vectors = kvm ? 2 * q + 2 : 0;
  return [
    '-machine',
    'q35',
    ...(kvm ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max']),
    '-m',
    `${mem}M`,
    // Guest RAM must be a shared fd mapping, or the backend writes into a private copy.
    '-object',
    `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa',
    'node,memdev=mem',
    ...(o.builtinTap
      ? ['-netdev', `tap,id=n0,ifname=${o.builtinTap},script=no,downscript=no,vhost=off`]
      : ['-chardev', chardev, '-netdev', `vhost-user,id=n0,chardev=c0${q > 1 ? `,queues=${q}` : ''}`]),
    '-device',
    `virtio-net-pci,netdev=n0,vectors=${vectors}${q > 1 ? ',mq=on' : ''}${o.hostMtu ? `,host_mtu=${o.hostMtu}` : ''}${o.packed ? ',packed=on' : ''},mac=52:54:00:12:34:56`,
    '-smp',
    String(o.smp ?? 1),
    '-display',
    'none',
    '-nodefaults',
    '-monitor',
    'none',
    ...(o.guest
      ? [
          '-kernel',
          o.guest.kernel,
          '-initrd',
          o.guest.initrd,
          '-append',
          o.guest.append,
          '-serial',
          'stdio',
          '-no-reboot',
        ]
      : ['-serial', 'none', '-boot', 'n']),
    ...(o.extraArgs ?? []),
  ];
}

export function startQemu(o: QemuOptions): Proc {
  const qemu = requireCommand('qemu-system-x86_64', 'qemu-system-x86');
  const roms = ['/usr/lib/ipxe/qemu/efi-virtio.rom', '/usr/share/qemu/efi-virtio.rom'];
  if (!roms.some((r) => existsSync(r))) {
    throw new Error(`efi-virtio.rom missing: the iPXE ROM comes with Debian's ipxe-qemu (run scripts/setup-host.sh)`);
  }
  const cmd = o.runAs
    ? ['setpriv', `--reuid=${o.runAs.uid}`, `--regid=${o.runAs.gid}`, '--clear-groups', qemu]
    : [qemu];
  const argv = [...cmd, ...qemuArgs(o)];
  const input = { input: !!o.input };
  return o.netns
    ? new Proc('ip', ['netns', 'exec', o.netns, ...argv], input)
    : new Proc(argv[0] as string, argv.slice(1), input);
}
