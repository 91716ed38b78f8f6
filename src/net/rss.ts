/**
 * RSS reference: the Toeplitz hash, the hash input of a frame (IPv4/IPv6 with TCP/UDP ports,
 * else addresses only), and the indirection table. The C++ path (native/rss.h) computes the
 * same; tests check both against the Microsoft RSS verification vectors.
 */

/** The standard 40-byte key (Microsoft's RSS verification suite; DPDK's default too). */
export const DEFAULT_RSS_KEY = Buffer.from(
  '6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa',
  'hex',
);

export function toeplitz(key: Uint8Array, input: Uint8Array): number {
  let result = 0;
  let window = ((key[0] ?? 0) << 24) | ((key[1] ?? 0) << 16) | ((key[2] ?? 0) << 8) | (key[3] ?? 0);
  for (let i = 0; i < input.length; i++) {
    const next = key[i + 4] ?? 0;
    for (let b = 7; b >= 0; b--) {
      if ((input[i] ?? 0) & (1 << b)) result ^= window;
      window = (window << 1) | ((next >> b) & 1);
    }
  }
  return result >>> 0;
}

export type HashType = 'none' | 'ipv4' | 'tcpv4' | 'udpv4' | 'ipv6' | 'tcpv6' | 'udpv6';

/** The bytes hashed for an Ethernet frame, and which fields they are. */
export function flowInput(f: Uint8Array): { input: Uint8Array; type: HashType } {
  const none = { input: new Uint8Array(0), type: 'none' as const };
  if (f.length < 14) return none;
  let off = 12;
  let et = ((f[off] ?? 0) << 8) | (f[off + 1] ?? 0);
  if ((et === 0x8100 || et === 0x88a8) && f.length >= 18) {
    off += 4;
    et = ((f[off] ?? 0) << 8) | (f[off + 1] ?? 0);
  }
  off += 2;
  if (et === 0x0800) {
    if (f.length < off + 20) return none;
    const ihl = ((f[off] ?? 0) & 0x0f) * 4;
    const proto = f[off + 9];
    const frag = (((f[off + 6] ?? 0) & 0x3f) | (f[off + 7] ?? 0)) !== 0;
    const l4 = off + ihl;
    if (!frag && ihl >= 20 && (proto === 6 || proto === 17) && f.length >= l4 + 4) {
      const input = new Uint8Array(12);
      input.set(f.subarray(off + 12, off + 20));
      input.set(f.subarray(l4, l4 + 4), 8);
      return { input, type: proto === 6 ? 'tcpv4' : 'udpv4' };
    }
    return { input: f.slice(off + 12, off + 20), type: 'ipv4' };
  }
  if (et === 0x86dd) {
    if (f.length < off + 40) return none;
    const next = f[off + 6];
    const l4 = off + 40;
    if ((next === 6 || next === 17) && f.length >= l4 + 4) {
      const input = new Uint8Array(36);
      input.set(f.subarray(off + 8, off + 40));
      input.set(f.subarray(l4, l4 + 4), 32);
      return { input, type: next === 6 ? 'tcpv6' : 'udpv6' };
    }
    return { input: f.slice(off + 8, off + 40), type: 'ipv6' };
  }
  return none;
}

export interface RssConfig {
  key: Uint8Array;
  /** Indirection table: receive queue pair per bucket (hash % length). */
  table: number[];
}

/** Default table: buckets spread round-robin over `pairs` queue pairs. */
export function defaultRss(pairs: number): RssConfig {
  return { key: DEFAULT_RSS_KEY, table: Array.from({ length: 128 }, (_, i) => i % pairs) };
}

export type SteeringPolicy = 'none' | 'toeplitz' | 'flow-affinity';
export interface Steering {
  policy: SteeringPolicy;
  rss: RssConfig;
}
export const STEERING_CODE: Record<SteeringPolicy, number> = { none: 0, toeplitz: 1, 'flow-affinity': 2 };

/** The same flow's other direction: addresses and ports swapped (what a reply hashes to). */
export function reverseFlowInput(input: Uint8Array): Uint8Array {
  const addr = input.length === 8 || input.length === 12 ? 4 : 16;
  const out = new Uint8Array(input.length);
  out.set(input.subarray(addr, 2 * addr), 0);
  out.set(input.subarray(0, addr), addr);
  if (input.length === 12 || input.length === 36) {
    out.set(input.subarray(2 * addr + 2, 2 * addr + 4), 2 * addr);
    out.set(input.subarray(2 * addr, 2 * addr + 2), 2 * addr + 2);
  }
  return out;
}

/** The receive queue pair for a frame (pair 0 for frames that are not IP). */
export function rssPair(cfg: RssConfig, frame: Uint8Array): { pair: number; hash: number; type: HashType } {
  const { input, type } = flowInput(frame);
  if (type === 'none') return { pair: 0, hash: 0, type };
  const hash = toeplitz(cfg.key, input);
  return { pair: cfg.table[hash % cfg.table.length] ?? 0, hash, type };
}
