/**
 * The data path through a real socket and shared memory, with the mock front-end as the
 * driver: frames the guest transmits come back on its receive queue (loopback backend).
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { defaultRss, rssPair, type Steering } from '../src/net/rss.js';
import type { Session } from '../src/vhost-user/session.js';
import { bringUpDevice, type DatapathKind, native, serve, servedPerTest, waitFor } from './helpers/harness.js';
import { type DriverPair, type GuestRam, MockFrontend } from './helpers/mock-frontend.js';
import type { RingDriver } from './helpers/ring-driver.js';

/** What each test serves, shut down after it. */
const t = servedPerTest();

const HDR = 12;
const DATA = 0x100000; // buffers live from 1 MiB on

type Pair = DriverPair;

let datapath: DatapathKind = 'native';
const countersOf = (s: Session) => ({ vring: (i: number) => s.counters(i) });

async function device(
  queuePairs: number,
  features: bigint,
  steering?: Steering,
  threadOf?: number[],
): Promise<{ session: Session; ram: GuestRam; pairs: Pair[] }> {
  t.srv = serve({ queuePairs }, { kind: 'loopback' }, datapath, steering, threadOf);
  // Throws when the backend refuses SET_FEATURES, SET_MEM_TABLE or SET_VRING_ENABLE.
  const d = await bringUpDevice(t.srv, features, queuePairs);
  t.fe = d.fe;
  return d;
}

/**
 * Posts receive buffers and kicks. A receiveq starts on its first kick, which the control
 * plane handles: wait for that, or frames sent meanwhile would find no receiveq.
 */
async function postRxBuffers(s: Session, p: Pair, count: number, size: number, base: number): Promise<void> {
  for (let i = 0; i < count; i++)
    p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(base + i * size), len: size, write: true }]));
  p.receiveq.publish();
  native.eventfdWrite(p.kicks.receiveq, 1n);
  const index = p.receiveq.layout.descOff / 0x10000;
  await waitFor(() => s.vrings[index]?.started === true, 2000, `receiveq ${index} started`);
}

function send(ram: GuestRam, p: Pair, at: number, payload: Buffer, flags = 0): void {
  ram.bytes.fill(0, at, at + HDR);
  ram.bytes[at] = flags;
  ram.bytes.set(payload, at + HDR);
  // Header and frame in two descriptors (ANY_LAYOUT is not needed for this split).
  p.transmitq.offer(
    p.transmitq.addChain([
      { addr: BigInt(at), len: HDR, write: false },
      { addr: BigInt(at + HDR), len: payload.length, write: false },
    ]),
  );
  p.transmitq.publish();
  native.eventfdWrite(p.kicks.transmitq, 1n);
}

const BASE = featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES);

describe.each(['native', 'ts'] as const)('%s data path', (kind) => {
  beforeEach(() => {
    datapath = kind;
  });

  describe.each([
    ['split ring, no EVENT_IDX', BASE],
    ['EVENT_IDX + MRG_RXBUF', BASE | featureMask(F.RING_F_EVENT_IDX, F.NET_F_MRG_RXBUF)],
  ])('loopback data path (%s)', (_name, features) => {
    it('returns every transmitted frame on the receive queue, header and bytes intact', async () => {
      const { session, ram, pairs } = await device(1, features);
      const p = pairs[0] as Pair;
      await postRxBuffers(session, p, 64, 2048, DATA);
      const frames = Array.from({ length: 20 }, (_, i) => Buffer.alloc(60 + i * 50, i + 1));
      frames.forEach((f, i) => send(ram, p, DATA + 0x40000 + i * 0x1000, f));
      await waitFor(() => p.receiveq.usedIdx() === frames.length, 5000, 'frames on the receive queue');
      expect(p.transmitq.usedIdx()).toBe(frames.length);
      frames.forEach((f, i) => {
        const u = p.receiveq.usedElem(i);
        expect(u.len).toBe(HDR + f.length);
        const at = DATA + u.id * 2048; // heads were allocated in order: id i is buffer i
        const hdr = Buffer.from(ram.bytes.subarray(at, at + HDR));
        expect(hdr.readUInt16LE(10)).toBe(1); // num_buffers
        expect(Buffer.from(ram.bytes.subarray(at + HDR, at + HDR + f.length)).equals(f)).toBe(true);
      });
      // The guest was interrupted on both queues.
      expect(native.eventfdRead(p.calls.receiveq)).not.toBeNull();
      expect(native.eventfdRead(p.calls.transmitq)).not.toBeNull();
      const c = countersOf(session);
      expect(c.vring(1).frames).toBe(20);
      expect(c.vring(0).frames).toBe(20);
      expect(c.vring(0).bytes).toBe(frames.reduce((a, f) => a + f.length, 0));
    });

    it('clears header flags the guest cannot take (no GUEST_CSUM): DATA_VALID comes back as 0', async () => {
      const { session, ram, pairs } = await device(1, features);
      const p = pairs[0] as Pair;
      await postRxBuffers(session, p, 8, 2048, DATA);
      const at = DATA + 0x40000;
      send(ram, p, at, Buffer.alloc(100, 7), 2); // VIRTIO_NET_HDR_F_DATA_VALID
      await waitFor(() => p.receiveq.usedIdx() === 1, 5000, 'the frame on the receive queue');
      const got = DATA + p.receiveq.usedElem(0).id * 2048;
      // §5.1.6.4.1: without GUEST_CSUM the device MUST set flags to zero.
      expect(ram.bytes[got]).toBe(0);
      expect(Buffer.from(ram.bytes.subarray(got + HDR, got + HDR + 100)).equals(Buffer.alloc(100, 7))).toBe(true);
    });

    it('waits for receive buffers: frames sent before buffers exist are dropped and counted', async () => {
      const { session, ram, pairs } = await device(1, features);
      const p = pairs[0] as Pair;
      send(ram, p, DATA + 0x40000, Buffer.alloc(100, 7));
      const c = countersOf(session);
      await waitFor(() => c.vring(0).dropNoBuffers === 1, 5000, 'drop counted');
      await postRxBuffers(session, p, 4, 2048, DATA);
      send(ram, p, DATA + 0x41000, Buffer.alloc(100, 8));
      await waitFor(() => p.receiveq.usedIdx() === 1, 5000, 'second frame delivered');
    });
  });

  describe('mergeable receive buffers', () => {
    it('spreads a large frame over several small buffers and sets num_buffers', async () => {
      const { session, ram, pairs } = await device(1, BASE | featureMask(F.NET_F_MRG_RXBUF));
      const p = pairs[0] as Pair;
      await postRxBuffers(session, p, 16, 512, DATA);
      const frame = Buffer.from(Array.from({ length: 1500 }, (_, i) => i & 0xff));
      send(ram, p, DATA + 0x40000, frame);
      await waitFor(() => p.receiveq.usedIdx() === 3, 5000, 'three buffers used');
      const lens = [0, 1, 2].map((i) => p.receiveq.usedElem(i).len);
      expect(lens).toEqual([512, 512, HDR + 1500 - 1024]);
      expect(Buffer.from(ram.bytes.subarray(DATA + 10, DATA + 12)).readUInt16LE(0)).toBe(3);
      const got = Buffer.concat(
        [0, 1, 2].map((i) => Buffer.from(ram.bytes.subarray(DATA + i * 512, DATA + i * 512 + (lens[i] as number)))),
      );
      expect(got.subarray(HDR).equals(frame)).toBe(true);
    });

    it('without MRG_RXBUF a frame larger than a buffer is dropped, not split', async () => {
      const { session, ram, pairs } = await device(1, BASE);
      const p = pairs[0] as Pair;
      await postRxBuffers(session, p, 4, 512, DATA);
      send(ram, p, DATA + 0x40000, Buffer.alloc(1500, 1));
      const c = countersOf(session);
      await waitFor(() => c.vring(0).dropTooBig === 1, 5000, 'too-big drop');
      expect(p.receiveq.usedIdx()).toBe(0);
    });
  });

  describe('a broken queue', () => {
    it.each([
      ['a descriptor loop', (d: RingDriver) => d.rawDesc(5, 0x200000n, 64, 1 /* NEXT */, 5)],
      ['an address outside guest memory', (d: RingDriver) => d.rawDesc(5, 0x4000_0000n, 64, 0, 0)],
    ])('is marked broken by %s while the other queue pair keeps forwarding', async (_what, poison) => {
      const { session, ram, pairs } = await device(2, BASE);
      const [p0, p1] = pairs as [Pair, Pair];
      await postRxBuffers(session, p0, 32, 2048, DATA);
      await postRxBuffers(session, p1, 32, 2048, DATA + 0x10000);
      poison(p1.transmitq);
      p1.transmitq.offer(5);
      p1.transmitq.publish();
      native.eventfdWrite(p1.kicks.transmitq, 1n);
      await waitFor(() => session.vrings[3]?.broken === true, 5000, 'vring 3 broken');
      const c = countersOf(session);
      expect(c.vring(3).ringErrors).toBe(1);
      for (let i = 0; i < 5; i++) send(ram, p0, DATA + 0x40000 + i * 0x1000, Buffer.alloc(80, i));
      await waitFor(() => p0.receiveq.usedIdx() === 5, 5000, 'pair 0 still forwarding');
      // Kicking the broken queue again changes nothing and logs nothing new.
      native.eventfdWrite(p1.kicks.transmitq, 1n);
      await new Promise((r) => setTimeout(r, 50));
      expect(c.vring(3).ringErrors).toBe(1);
    });
  });

  describe('enable and disable', () => {
    it('a started but disabled transmitq is drained and its frames discarded', async () => {
      const { session, ram, pairs } = await device(1, BASE);
      const p = pairs[0] as Pair;
      await postRxBuffers(session, p, 16, 2048, DATA);
      send(ram, p, DATA + 0x40000, Buffer.alloc(80, 1));
      await waitFor(() => p.receiveq.usedIdx() === 1, 5000, 'first frame');
      await t.fe?.acked('SET_VRING_ENABLE', MockFrontend.state({ index: 1, num: 0 }));
      for (let i = 0; i < 5; i++) send(ram, p, DATA + 0x41000 + i * 0x1000, Buffer.alloc(80, 2));
      // Drained: every chain comes back used ...
      await waitFor(() => p.transmitq.usedIdx() === 6, 5000, 'transmitq drained');
      // ... and nothing reaches the host (here: back to the guest).
      await new Promise((r) => setTimeout(r, 50));
      expect(p.receiveq.usedIdx()).toBe(1);
      expect(countersOf(session).vring(1).dropDisabled).toBe(5);
      await t.fe?.acked('SET_VRING_ENABLE', MockFrontend.state({ index: 1, num: 1 }));
      send(ram, p, DATA + 0x48000, Buffer.alloc(80, 3));
      await waitFor(() => p.receiveq.usedIdx() === 2, 5000, 'enabled again');
    });
  });

  describe('receive steering over 2 queue pairs (loopback)', () => {
    /** Ethernet + IPv4 + UDP, src 10.0.0.1:sport -> 10.0.0.2:dport, an id in the payload. */
    const udp = (sport: number, dport: number, id: number, reverse = false): Buffer => {
      const a = [10, 0, 0, 1];
      const b = [10, 0, 0, 2];
      const [src, dst] = reverse ? [b, a] : [a, b];
      const [sp, dp] = reverse ? [dport, sport] : [sport, dport];
      return Buffer.from([
        ...[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00],
        ...[0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, ...(src as number[]), ...(dst as number[])],
        ...[sp >> 8, sp & 0xff, dp >> 8, dp & 0xff, 0, 12, 0, 0],
        ...[id >> 8, id & 0xff, 0xab, 0xcd],
      ]);
    };
    const idsOn = (ram: GuestRam, p: Pair, base: number, size: number): number[] =>
      Array.from({ length: p.receiveq.usedIdx() }, (_, i) => {
        const at = base + p.receiveq.usedElem(i).id * size + HDR + 42;
        return ((ram.bytes[at] ?? 0) << 8) | (ram.bytes[at + 1] ?? 0);
      });

    it.each([
      ['one thread per pair', undefined],
      ['both pairs on one thread', [0, 0]],
    ])('toeplitz: each flow lands on the receiveq the reference hash picks (%s)', async (_t, threadOf) => {
      const steering: Steering = { policy: 'toeplitz', rss: defaultRss(2) };
      const { session, ram, pairs } = await device(2, BASE, steering, threadOf);
      const [p0, p1] = pairs as [Pair, Pair];
      await postRxBuffers(session, p0, 64, 2048, DATA);
      await postRxBuffers(session, p1, 64, 2048, DATA + 0x20000);
      const frames = Array.from({ length: 40 }, (_, i) => udp(4000 + i, 53, i));
      frames.forEach((f, i) => send(ram, p0, DATA + 0x40000 + i * 0x1000, f));
      await waitFor(() => p0.receiveq.usedIdx() + p1.receiveq.usedIdx() === 40, 5000, 'all frames delivered');
      const want1 = frames
        .map((f, i) => [i, rssPair(defaultRss(2), f).pair] as const)
        .filter(([, q]) => q === 1)
        .map(([i]) => i);
      expect(want1.length).toBeGreaterThan(5);
      expect(want1.length).toBeLessThan(35);
      expect(idsOn(ram, p1, DATA + 0x20000, 2048).sort((a, b) => a - b)).toEqual(want1);
      expect(idsOn(ram, p0, DATA, 2048).length).toBe(40 - want1.length);
      expect(countersOf(session).vring(0).handedOver).toBe(want1.length);
    });

    it('steering changed on a running session (a reload) moves the flows at once', async () => {
      const { session, ram, pairs } = await device(2, BASE, { policy: 'toeplitz', rss: defaultRss(2) });
      const [p0, p1] = pairs as [Pair, Pair];
      await postRxBuffers(session, p0, 64, 2048, DATA);
      await postRxBuffers(session, p1, 64, 2048, DATA + 0x20000);
      // Every entry of the indirection table names pair 1: every flow goes there.
      const all1 = defaultRss(2);
      session.tuning.setSteering({ policy: 'toeplitz', rss: { key: all1.key, table: all1.table.map(() => 1) } });
      const frames = Array.from({ length: 20 }, (_, i) => udp(4000 + i, 53, i));
      frames.forEach((f, i) => send(ram, p0, DATA + 0x40000 + i * 0x1000, f));
      await waitFor(() => p1.receiveq.usedIdx() === 20, 5000, 'all frames on receiveq1');
      expect(p0.receiveq.usedIdx()).toBe(0);
      // And back to none: frames stay on the pair that carried them.
      session.tuning.setSteering({ policy: 'none', rss: defaultRss(2) });
      const more = Array.from({ length: 10 }, (_, i) => udp(5000 + i, 53, 100 + i));
      more.forEach((f, i) => send(ram, p0, DATA + 0x60000 + i * 0x1000, f));
      await waitFor(() => p0.receiveq.usedIdx() === 10, 5000, 'frames on receiveq0');
      expect(p1.receiveq.usedIdx()).toBe(20);
    });

    it('flow-affinity: replies follow the transmitq their flow last used', async () => {
      const steering: Steering = { policy: 'flow-affinity', rss: defaultRss(2) };
      const { session, ram, pairs } = await device(2, BASE, steering);
      const [p0, p1] = pairs as [Pair, Pair];
      await postRxBuffers(session, p0, 64, 2048, DATA);
      await postRxBuffers(session, p1, 64, 2048, DATA + 0x20000);
      // A flow whose replies Toeplitz alone would put on pair 0 ...
      let sport = 1000;
      while (rssPair(defaultRss(2), udp(sport, 80, 0, true)).pair !== 0) sport++;
      // ... is sent on transmitq 1; its reply, sent on transmitq 0, must come back on pair 1.
      send(ram, p1, DATA + 0x40000, udp(sport, 80, 1));
      await waitFor(() => p0.receiveq.usedIdx() + p1.receiveq.usedIdx() === 1, 5000, 'first frame');
      send(ram, p0, DATA + 0x41000, udp(sport, 80, 2, true));
      await waitFor(() => p0.receiveq.usedIdx() + p1.receiveq.usedIdx() === 2, 5000, 'reply');
      expect(idsOn(ram, p1, DATA + 0x20000, 2048)).toContain(2);
    });

    it('flow-affinity: a flow sent on a disabled transmitq is not learned (its frames never left)', async () => {
      const steering: Steering = { policy: 'flow-affinity', rss: defaultRss(2) };
      const { session, ram, pairs } = await device(2, BASE, steering);
      const [p0, p1] = pairs as [Pair, Pair];
      await postRxBuffers(session, p0, 64, 2048, DATA);
      await postRxBuffers(session, p1, 64, 2048, DATA + 0x20000);
      let sport = 1000;
      while (rssPair(defaultRss(2), udp(sport, 80, 0, true)).pair !== 0) sport++;
      // The flow goes out on transmitq 1 while it is disabled: drained and discarded ...
      await t.fe?.acked('SET_VRING_ENABLE', MockFrontend.state({ index: 3, num: 0 }));
      send(ram, p1, DATA + 0x40000, udp(sport, 80, 1));
      await waitFor(() => p1.transmitq.usedIdx() === 1, 5000, 'transmitq 1 drained');
      expect(countersOf(session).vring(3).dropDisabled).toBe(1);
      // ... so its reply follows Toeplitz (pair 0), not the transmitq that discarded it.
      send(ram, p0, DATA + 0x41000, udp(sport, 80, 2, true));
      await waitFor(() => p0.receiveq.usedIdx() + p1.receiveq.usedIdx() === 1, 5000, 'reply');
      expect(idsOn(ram, p0, DATA, 2048)).toEqual([2]);
      expect(p1.receiveq.usedIdx()).toBe(0);
    });

    it('a disabled receiveq gets nothing: frames for it stay on the pair that has them', async () => {
      const steering: Steering = { policy: 'toeplitz', rss: defaultRss(2) };
      const { session, ram, pairs } = await device(2, BASE, steering);
      const [p0, p1] = pairs as [Pair, Pair];
      await postRxBuffers(session, p0, 64, 2048, DATA);
      await postRxBuffers(session, p1, 64, 2048, DATA + 0x20000);
      await t.fe?.acked('SET_VRING_ENABLE', MockFrontend.state({ index: 2, num: 0 }));
      for (let i = 0; i < 20; i++) send(ram, p0, DATA + 0x40000 + i * 0x1000, udp(5000 + i, 53, i));
      await waitFor(() => p0.receiveq.usedIdx() === 20, 5000, 'all on pair 0');
      expect(p1.receiveq.usedIdx()).toBe(0);
    });
  });
});
