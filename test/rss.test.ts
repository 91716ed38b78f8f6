/**
 * RSS: the Toeplitz hash against the Microsoft verification vectors (shared/reference), in
 * TS and in C++, and the two implementations against each other on random frames.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';
import { DEFAULT_RSS_KEY, defaultRss, flowInput, rssPair, toeplitz } from '../src/net/rss.js';
import { native } from './helpers/harness.js';

interface Vector {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  ip: string;
  tcp: string;
}
function loadVectors(): { key: string; ipv4: Vector[]; ipv6: Vector[] } {
  // The vectors live in the shared folder beside the checkout; a copy is kept in test/data.
  for (const p of [
    join(packageRoot, '..', 'shared', 'reference', 'toeplitz-vectors.json'),
    join(packageRoot, 'test', 'data', 'toeplitz-vectors.json'),
  ]) {
    try {
      return JSON.parse(readFileSync(p, 'utf8'));
    } catch {
      /* next */
    }
  }
  throw new Error('toeplitz-vectors.json not found');
}
const V = loadVectors();

function v4(a: string): number[] {
  return a.split('.').map(Number);
}
function v6(a: string): number[] {
  const [head = '', tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
}
const port = (p: number) => [p >> 8, p & 0xff];

/** An Ethernet frame carrying TCP over IPv4 or IPv6 with these addresses and ports. */
function tcpFrame(family: 4 | 6, src: number[], dst: number[], sport: number, dport: number): Buffer {
  const eth = [...Array(12).fill(0x02), ...(family === 4 ? [0x08, 0x00] : [0x86, 0xdd])];
  const tcp = [...port(sport), ...port(dport), ...Array(16).fill(0)];
  const ip =
    family === 4
      ? [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, ...src, ...dst]
      : [0x60, 0, 0, 0, 0, 20, 6, 64, ...src, ...dst];
  return Buffer.from([...eth, ...ip, ...tcp]);
}

describe('Toeplitz vectors', () => {
  it('the default key is the one of the vectors', () => {
    expect(DEFAULT_RSS_KEY.toString('hex')).toBe(V.key);
  });
  for (const [family, list, addr] of [
    [4, V.ipv4, v4],
    [6, V.ipv6, v6],
  ] as const) {
    it.each(list.map((v) => [v.src, v.dst, v]))(`IPv${family} %s -> %s`, (_s, _d, v) => {
      const key = Buffer.from(V.key, 'hex');
      const two = Buffer.from([...addr(v.src), ...addr(v.dst)]);
      const four = Buffer.from([...two, ...port(v.sport), ...port(v.dport)]);
      expect(toeplitz(key, two)).toBe(Number(v.ip));
      expect(toeplitz(key, four)).toBe(Number(v.tcp));
      expect(native.toeplitz(key, two)).toBe(Number(v.ip));
      expect(native.toeplitz(key, four)).toBe(Number(v.tcp));
      // Through the frame parser too: a TCP frame hashes its 4-tuple.
      const frame = tcpFrame(family, addr(v.src), addr(v.dst), v.sport, v.dport);
      expect(flowInput(frame).type).toBe(family === 4 ? 'tcpv4' : 'tcpv6');
      expect(rssPair(defaultRss(4), frame).hash).toBe(Number(v.tcp));
      expect(native.rssHash(key, frame, defaultRss(4).table).hash).toBe(Number(v.tcp));
    });
  }
});

describe('RSS: C++ and TS agree', () => {
  it('on random frames (IPv4/IPv6, TCP/UDP/other, fragments, VLAN, truncated)', () => {
    const frameArb = fc
      .record({
        vlan: fc.boolean(),
        family: fc.constantFrom(4, 6, 0),
        proto: fc.constantFrom(6, 17, 1, 58),
        frag: fc.boolean(),
        body: fc.uint8Array({ minLength: 0, maxLength: 80 }),
        cut: fc.nat(120),
      })
      .map((r) => {
        const et = r.family === 4 ? [0x08, 0x00] : r.family === 6 ? [0x86, 0xdd] : [0x88, 0xb5];
        const eth = [...Array(12).fill(0x02), ...(r.vlan ? [0x81, 0x00, 0, 7] : []), ...et];
        const ip =
          r.family === 4
            ? [0x45, 0, 0, 60, 0, 0, r.frag ? 0x20 : 0x40, 0, 64, r.proto, 0, 0]
            : [0x60, 0, 0, 0, 0, 20, r.proto, 64];
        const all = Buffer.from([...eth, ...ip, ...r.body]);
        return all.subarray(0, Math.min(all.length, r.cut + 10));
      });
    const tables = fc.array(fc.nat(15), { minLength: 1, maxLength: 128 });
    fc.assert(
      fc.property(frameArb, fc.uint8Array({ minLength: 40, maxLength: 40 }), tables, (frame, key, table) => {
        const ts = rssPair({ key, table }, frame);
        const cc = native.rssHash(Buffer.from(key), Buffer.from(frame), table);
        expect(cc.hash).toBe(ts.hash);
        expect(cc.pair).toBe(ts.pair);
      }),
      { numRuns: 3000 },
    );
  });

  it('spreads many flows over every queue of the default table', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++)
      seen.add(rssPair(defaultRss(4), tcpFrame(4, [10, 0, 0, 1], [10, 0, 0, 2], 1000 + i, 5201)).pair);
    expect([...seen].sort()).toEqual([0, 1, 2, 3]);
  });
});
