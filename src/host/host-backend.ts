/**
 * Host backends as the user names them: `tap:NAME` (`tap:NAME,persist`: the TAP outlives the
 * backend; `io-uring=on|off`: io_uring batches or a write per frame, instead of the cheaper of
 * the two as measured while running, the default),
 * `macvtap:PARENT[,mode=M][,mac=MAC][,name=NAME]`, `af-packet:IFACE`, `loopback`, `null`
 * (optionally `null:source=LEN`). Parsing is pure; opening asks the kernel.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { ConfigError, ErrorCode } from '../errors.js';
import { call, type NativeBinding } from '../native.js';

/**
 * TAP and macvtap `writes`: how a transmit burst reaches the device (native data path).
 * `io-uring` (`io-uring=on`): the burst's writes submitted to io_uring at once; `plain`
 * (`io-uring=off`): each frame with its own write(2); `auto` (the default, `io-uring=auto`):
 * both measured while it runs, the cheaper per frame kept (native/write_chooser.h). A kernel
 * that refuses io_uring gets plain writes anyway.
 */
export type TapWrites = 'io-uring' | 'plain' | 'auto';

export type HostBackendSpec =
  | { kind: 'tap'; name: string; persist?: boolean; writes?: TapWrites }
  /**
   * A macvtap on PARENT (created unless NAME exists): its /dev/tapN speaks the TAP API. `mac`
   * is the guest's MAC: a macvtap receives unicast only for its own address (not needed in
   * passthru mode, which takes the parent's traffic whole).
   */
  | { kind: 'macvtap'; parent: string; mode: MacvtapMode; mac?: string; name?: string; writes?: TapWrites }
  /**
   * qdiscBypass: PACKET_QDISC_BYPASS, frames skip the interface's queueing discipline (tc).
   * rxRing: frames for the guest come through a TPACKET_V3 ring, read without system calls; a
   * frame waits until its block fills or 1 ms passes (rounded up to the kernel's tick).
   */
  | { kind: 'af-packet'; iface: string; qdiscBypass?: boolean; rxRing?: boolean; fanout?: FanoutMode }
  | { kind: 'loopback' }
  | { kind: 'null'; sourceLen?: number };

const IFNAMSIZ = 16;
export const MACVTAP_MODES = ['bridge', 'vepa', 'private', 'passthru'] as const;
export type MacvtapMode = (typeof MACVTAP_MODES)[number];
/**
 * How the kernel spreads the interface's frames over the pairs' AF_PACKET sockets (packet(7)
 * PACKET_FANOUT): by flow hash (default), round robin (lb), by receiving CPU, by the frame's
 * recorded queue (qm), or at random. The value is the kernel's PACKET_FANOUT_* number.
 */
export const FANOUT_MODES = { hash: 0, lb: 1, cpu: 2, rnd: 4, qm: 5 } as const;
export type FanoutMode = keyof typeof FANOUT_MODES;

export function parseHostBackend(s: string): HostBackendSpec {
  const colon = s.indexOf(':');
  const kind = colon < 0 ? s : s.slice(0, colon);
  const arg = colon < 0 ? undefined : s.slice(colon + 1);
  const bad = (why: string): never => {
    throw new ConfigError(ErrorCode.ConfigInvalid, `invalid backend '${s}'`, [
      `backend: ${why} (expected tap:NAME[,persist][,io-uring=on|off|auto], macvtap:PARENT[,mode=bridge|vepa|private|passthru][,mac=MAC][,name=NAME][,io-uring=on|off|auto], af-packet:IFACE[,qdisc-bypass][,rx-ring][,fanout=hash|lb|cpu|rnd|qm], loopback, null or null:source=LEN)`,
    ]);
  };
  // Only a macvtap's mac= option holds ':' of its own.
  if (kind !== 'macvtap' && arg?.includes(':')) bad('too many ":"');
  const ifname = (v: string | undefined): string => {
    if (!v || v.length >= IFNAMSIZ || /[\s/:]/.test(v))
      bad(`interface name must be 1-${IFNAMSIZ - 1} characters without spaces, '/' or ':'`);
    return v as string;
  };
  switch (kind) {
    case 'tap': {
      const [name, ...options] = (arg ?? '').split(',');
      const spec: HostBackendSpec & { kind: 'tap' } = { kind: 'tap', name: ifname(name) };
      for (const o of options) {
        if (o === 'persist') spec.persist = true;
        else if (Object.hasOwn(WRITES, o)) spec.writes = WRITES[o] as TapWrites;
        else bad(`unknown TAP option '${o}' (persist, io-uring=on|off|auto)`);
      }
      return spec;
    }
    case 'macvtap': {
      const [parent, ...options] = (arg ?? '').split(',');
      const spec: HostBackendSpec & { kind: 'macvtap' } = { kind: 'macvtap', parent: ifname(parent), mode: 'bridge' };
      for (const o of options) {
        const [k, v] = o.split('=');
        if (k === 'mode' && (MACVTAP_MODES as readonly string[]).includes(v ?? '')) spec.mode = v as MacvtapMode;
        else if (k === 'mac' && v && /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(v)) spec.mac = v.toLowerCase();
        else if (k === 'name') spec.name = ifname(v);
        else if (Object.hasOwn(WRITES, o)) spec.writes = WRITES[o] as TapWrites;
        else
          bad(
            `unknown or bad macvtap option '${o}' (mode=bridge|vepa|private|passthru, mac=MAC, name=NAME, io-uring=on|off|auto)`,
          );
      }
      if (!spec.mac && spec.mode !== 'passthru') {
        bad('macvtap needs mac=GUEST_MAC (a macvtap receives unicast only for its own address) unless mode=passthru');
      }
      return spec;
    }
    case 'af-packet': {
      const [iface, ...options] = (arg ?? '').split(',');
      const spec: HostBackendSpec = { kind: 'af-packet', iface: ifname(iface) };
      for (const o of options) {
        const fan = /^fanout=(.*)$/.exec(o)?.[1];
        if (o === 'qdisc-bypass') spec.qdiscBypass = true;
        else if (o === 'rx-ring') spec.rxRing = true;
        else if (fan !== undefined && Object.hasOwn(FANOUT_MODES, fan)) spec.fanout = fan as FanoutMode;
        else
          bad(`unknown af-packet option '${o}' (qdisc-bypass, rx-ring, fanout=${Object.keys(FANOUT_MODES).join('|')})`);
      }
      return spec;
    }
    case 'loopback':
      if (arg !== undefined) bad('loopback takes no argument');
      return { kind: 'loopback' };
    case 'null': {
      if (arg === undefined) return { kind: 'null' };
      const m = /^source=(\d+)$/.exec(arg);
      const len = m ? Number(m[1]) : NaN;
      if (!(len >= 60 && len <= 65535)) bad('null:source=LEN needs LEN in 60..65535');
      return { kind: 'null', sourceLen: len };
    }
    default:
      return bad(`unknown kind '${kind}'`);
  }
}

export function formatHostBackend(b: HostBackendSpec): string {
  switch (b.kind) {
    case 'tap':
      return `tap:${b.name}${b.persist ? ',persist' : ''}${writesOption(b.writes)}`;
    case 'macvtap':
      return `macvtap:${b.parent},mode=${b.mode}${b.mac ? `,mac=${b.mac}` : ''}${b.name ? `,name=${b.name}` : ''}${writesOption(b.writes)}`;
    case 'af-packet':
      return `af-packet:${b.iface}${b.qdiscBypass ? ',qdisc-bypass' : ''}${b.rxRing ? ',rx-ring' : ''}${b.fanout ? `,fanout=${b.fanout}` : ''}`;
    case 'loopback':
      return 'loopback';
    case 'null':
      return b.sourceLen ? `null:source=${b.sourceLen}` : 'null';
  }
}

export interface OpenHostBackend {
  spec: HostBackendSpec;
  /** Host fds, one per queue pair (TAP queues or AF_PACKET sockets); empty for loopback/null. */
  fds: number[];
  /** The TAP's actual name, when it is one. */
  name?: string;
  /** The TAP's MAC (host side), when we set it. */
  mac?: string;
  /**
   * The MTU the front-end asks for (NET_SET_MTU), applied to a host interface we own (a TAP);
   * says what happened. An MTU the operator set (`--mtu`) is kept.
   */
  setMtu?(mtu: number): 'applied' | 'kept' | 'not ours';
  close(): void;
}

export interface HostOpenOptions {
  queuePairs: number;
  /** TAP: host-side MAC; default derived from the TAP name, so restarts keep it. */
  tapMac?: string;
  /** TAP: the host side's MTU, set at open and kept (`--mtu`). */
  mtu?: number;
}

/** A locally administered unicast MAC derived from `seed`: stable across restarts. */
export function stableMac(seed: string): string {
  const h = createHash('sha256').update(seed).digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new ConfigError(ErrorCode.ConfigInvalid, `invalid MAC '${mac}'`, [
      'tapMac: expected six hex pairs like 02:00:00:00:00:01',
    ]);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

/**
 * Opens the host side. TAP: created when missing (then given its stable MAC), one queue fd per
 * queue pair (IFF_MULTI_QUEUE when more than one), IFF_VNET_HDR, link up. AF_PACKET: one
 * socket per pair, joined in a hash fanout group when more than one.
 */
export function openHostBackend(
  native: NativeBinding,
  spec: HostBackendSpec,
  opts: HostOpenOptions = { queuePairs: 1 },
): OpenHostBackend {
  const fds: number[] = [];
  const close = () => {
    for (const fd of fds.splice(0)) native.close(fd);
  };
  try {
    switch (spec.kind) {
      case 'tap': {
        const existed = existsSync(`/sys/class/net/${spec.name}`);
        let name = spec.name;
        for (let i = 0; i < opts.queuePairs; i++) {
          const t = call(`open TAP ${spec.name}`, () =>
            native.tapOpen(spec.name, {
              vnetHdr: true,
              multiQueue: opts.queuePairs > 1,
              persist: spec.persist === true && i === 0,
            }),
          );
          fds.push(t.fd);
          name = t.name;
        }
        const mac = opts.tapMac ?? (existed ? undefined : stableMac(`vhost-user-net:${name}`));
        call(`set up TAP ${name}`, () =>
          native.ifaceSetup(name, { mac: mac ? macBytes(mac) : undefined, up: true, mtu: opts.mtu }),
        );
        const setMtu = (mtu: number): 'applied' | 'kept' => {
          if (opts.mtu !== undefined) return 'kept';
          call(`set the MTU of TAP ${name}`, () => native.ifaceSetup(name, { up: true, mtu }));
          return 'applied';
        };
        return { spec, fds, name, mac, setMtu, close };
      }
      case 'macvtap': {
        const m = openMacvtap(spec, opts.queuePairs);
        const closeAll = () => {
          close();
          m.remove();
        };
        try {
          for (let i = 0; i < opts.queuePairs; i++) {
            fds.push(
              call(`open ${m.dev}`, () =>
                native.tapOpenPath(m.dev, { vnetHdr: true, multiQueue: opts.queuePairs > 1 }),
              ),
            );
          }
          call(`set up ${m.name}`, () => native.ifaceSetup(m.name, { up: true, mtu: opts.mtu }));
        } catch (err) {
          m.remove();
          throw err;
        }
        return { spec, fds, name: m.name, mac: spec.mac, close: closeAll };
      }
      case 'af-packet': {
        const group = opts.queuePairs > 1 ? process.pid & 0xffff : undefined;
        for (let i = 0; i < opts.queuePairs; i++) {
          fds.push(
            call(`open AF_PACKET on ${spec.iface}`, () =>
              native.afPacketOpen(spec.iface, {
                fanoutGroup: group,
                fanoutMode: FANOUT_MODES[spec.fanout ?? 'hash'],
                qdiscBypass: spec.qdiscBypass,
                rxRing: spec.rxRing,
              }),
            ),
          );
        }
        return { spec, fds, name: spec.iface, close };
      }
      default:
        return { spec, fds, close };
    }
  } catch (err) {
    close();
    throw err;
  }
}

/** `ip` (iproute2): creating a macvtap is rtnetlink work done once, at start. */
function ip(args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.error) {
    throw new ConfigError(ErrorCode.ConfigInvalid, 'macvtap: cannot run ip (iproute2)', [String(r.error.message)]);
  }
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

/**
 * The macvtap device: created on the parent (named `name`, or mvt-PARENT) unless a link of that
 * name exists, in which case it is attached to as it is. Its character device is /dev/tapN
 * (N = its ifindex); where no udev made the node, it is made from the major:minor in sysfs.
 */
function openMacvtap(
  spec: HostBackendSpec & { kind: 'macvtap' },
  queuePairs: number,
): { name: string; dev: string; remove(): void } {
  const name = spec.name ?? `mvt-${spec.parent}`.slice(0, IFNAMSIZ - 1);
  const fail = (why: string, detail: string): never => {
    throw new ConfigError(ErrorCode.ConfigInvalid, `macvtap ${name} on ${spec.parent}: ${why}`, [detail]);
  };
  let created = false;
  if (!existsSync(`/sys/class/net/${name}`)) {
    if (!existsSync(`/sys/class/net/${spec.parent}`)) fail('no such parent interface', spec.parent);
    const r = ip([
      'link',
      'add',
      'link',
      spec.parent,
      'name',
      name,
      ...(spec.mac ? ['address', spec.mac] : []),
      ...(queuePairs > 1 ? ['numtxqueues', String(queuePairs), 'numrxqueues', String(queuePairs)] : []),
      'type',
      'macvtap',
      'mode',
      spec.mode,
    ]);
    if (!r.ok) fail('ip link add failed', r.out);
    created = true;
  } else if (!existsSync(`/sys/class/net/${name}/macvtap`)) {
    fail('a link of that name exists and is not a macvtap', name);
  }
  const remove = () => {
    if (created) ip(['link', 'del', name]);
    created = false;
  };
  try {
    const ifindex = readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim();
    const dev = `/dev/tap${ifindex}`;
    if (!existsSync(dev)) {
      const mm = readFileSync(`/sys/class/net/${name}/macvtap/tap${ifindex}/dev`, 'utf8').trim().split(':');
      const r = spawnSync('mknod', ['-m', '0600', dev, 'c', mm[0] ?? '', mm[1] ?? ''], { encoding: 'utf8' });
      if (r.status !== 0) fail(`cannot create ${dev}`, `${r.stderr}`.trim());
    }
    return { name, dev, remove };
  } catch (err) {
    remove();
    throw err;
  }
}

/** NET_SET_MTU on the host side: applied to a TAP of ours, kept when `--mtu` pinned it; logged. */
export function applyHostMtu(
  host: OpenHostBackend,
  mtu: number,
  log: { info(o: object, m: string): void; warn(o: object, m: string): void },
): void {
  try {
    const r = host.setMtu?.(mtu) ?? 'not ours';
    log.info({ mtu, host: host.name ?? host.spec.kind, result: r }, 'front-end MTU and the host interface');
  } catch (err) {
    log.warn({ mtu, err: (err as Error).message }, 'the host interface refused the MTU');
  }
}

/** TAP and macvtap `io-uring=` options and the writes they ask for. */
const WRITES: Record<string, TapWrites> = {
  'io-uring=on': 'io-uring',
  'io-uring=off': 'plain',
  'io-uring=auto': 'auto',
};

/** The `io-uring=` option that gives `writes` (none: the default). */
function writesOption(w: TapWrites | undefined): string {
  return w === undefined ? '' : `,${Object.keys(WRITES).find((k) => WRITES[k] === w)}`;
}
