/**
 * Host backends as the user names them: `tap:NAME`, `af-packet:IFACE`, `loopback`, `null`
 * (optionally `null:source=LEN`). Parsing is pure; opening asks the kernel.
 */
import { ConfigError, ErrorCode } from '../errors.js';
import { call, type NativeBinding } from '../native.js';

export type HostBackendSpec =
  | { kind: 'tap'; name: string }
  | { kind: 'af-packet'; iface: string }
  | { kind: 'loopback' }
  | { kind: 'null'; sourceLen?: number };

const IFNAMSIZ = 16;

export function parseHostBackend(s: string): HostBackendSpec {
  const [kind, arg, ...rest] = s.split(':');
  const bad = (why: string): never => {
    throw new ConfigError(ErrorCode.ConfigInvalid, `invalid backend '${s}'`, [
      `backend: ${why} (expected tap:NAME, af-packet:IFACE, loopback, null or null:source=LEN)`,
    ]);
  };
  if (rest.length > 0) bad('too many ":"');
  const ifname = (v: string | undefined): string => {
    if (!v || v.length >= IFNAMSIZ || /[\s/:]/.test(v))
      bad(`interface name must be 1-${IFNAMSIZ - 1} characters without spaces, '/' or ':'`);
    return v as string;
  };
  switch (kind) {
    case 'tap':
      return { kind: 'tap', name: ifname(arg) };
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
      return `tap:${b.name}`;
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
  /** Host fds (one per queue pair for TAP with multiqueue); empty for loopback/null. */
  fds: number[];
  /** The TAP's actual name, when it is one. */
  name?: string;
  close(): void;
}

/** Opens the host side: the TAP is created when it does not exist. */
export function openHostBackend(native: NativeBinding, spec: HostBackendSpec): OpenHostBackend {
  const close = (fds: number[]) => () => {
    for (const fd of fds.splice(0)) native.close(fd);
  };
  switch (spec.kind) {
    case 'tap': {
      const t = call(`open TAP ${spec.name}`, () => native.tapOpen(spec.name, { vnetHdr: true, multiQueue: false }));
      const fds = [t.fd];
      return { spec, fds, name: t.name, close: close(fds) };
    }
    case 'af-packet': {
      const fd = call(`open AF_PACKET on ${spec.iface}`, () => native.afPacketOpen(spec.iface));
      const fds = [fd];
      return { spec, fds, close: close(fds) };
    }
    default:
      return { spec, fds: [], close: () => {} };
  }
}
