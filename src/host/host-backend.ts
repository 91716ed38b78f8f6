/**
 * Host backends as the user names them: `tap:NAME` (`tap:NAME,persist`: the TAP outlives the
 * backend), `af-packet:IFACE`, `loopback`, `null` (optionally `null:source=LEN`). Parsing is
 * pure; opening asks the kernel.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { ConfigError, ErrorCode } from '../errors.js';
import { call, type NativeBinding } from '../native.js';

export type HostBackendSpec =
  | { kind: 'tap'; name: string; persist?: boolean }
  | { kind: 'af-packet'; iface: string }
  | { kind: 'loopback' }
  | { kind: 'null'; sourceLen?: number };

const IFNAMSIZ = 16;

export function parseHostBackend(s: string): HostBackendSpec {
  const [kind, arg, ...rest] = s.split(':');
  const bad = (why: string): never => {
    throw new ConfigError(ErrorCode.ConfigInvalid, `invalid backend '${s}'`, [
      `backend: ${why} (expected tap:NAME[,persist], af-packet:IFACE, loopback, null or null:source=LEN)`,
    ]);
  };
  if (rest.length > 0) bad('too many ":"');
  const ifname = (v: string | undefined): string => {
    if (!v || v.length >= IFNAMSIZ || /[\s/:]/.test(v))
      bad(`interface name must be 1-${IFNAMSIZ - 1} characters without spaces, '/' or ':'`);
    return v as string;
  };
  switch (kind) {
    case 'tap': {
      const [name, ...options] = (arg ?? '').split(',');
      for (const o of options) if (o !== 'persist') bad(`unknown TAP option '${o}' (persist)`);
      return options.includes('persist')
        ? { kind: 'tap', name: ifname(name), persist: true }
        : { kind: 'tap', name: ifname(name) };
    }
    case 'af-packet':
      return { kind: 'af-packet', iface: ifname(arg) };
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
      return `tap:${b.name}${b.persist ? ',persist' : ''}`;
    case 'af-packet':
      return `af-packet:${b.iface}`;
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
      case 'af-packet': {
        const group = opts.queuePairs > 1 ? process.pid & 0xffff : undefined;
        for (let i = 0; i < opts.queuePairs; i++) {
          fds.push(
            call(`open AF_PACKET on ${spec.iface}`, () => native.afPacketOpen(spec.iface, { fanoutGroup: group })),
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
