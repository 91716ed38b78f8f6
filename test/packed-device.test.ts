/**
 * Packed rings through the whole device (session, data plane, loopback host) with a packed
 * driver over a real socket and shared memory, on both data paths: frames go out on the
 * transmitq and come back on the receiveq; `/rings` and the ring page draw both rings; a ring
 * stopped with GET_VRING_BASE resumes where the reply said; and a front-end that lost the
 * position shows what is lost without it (vhost-user.rst "Vring state description": a packed
 * ring keeps no used index in guest memory, so nothing else can say where it was).
 */
import { describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { startHttp } from '../src/metrics/http.js';
import { ringsOf, type RingSnapshot } from '../src/metrics/rings.js';
import { encodeU64 } from '../src/vhost-user/codec.js';
import { chromium } from './helpers/chromium.js';
import { bringUpDevice, deviceWithPlan, native, serve, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend, type GuestRam } from './helpers/mock-frontend.js';
import type { PackedDriver } from './helpers/packed-driver.js';

const FEATURES = featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES, F.F_RING_PACKED);
const HDR = 12; // virtio-net header with VERSION_1

/** Receive buffers: `count` lists of two writable 1 KiB descriptors each. */
function offerReceive(receiveq: PackedDriver, count: number, at: number): void {
  for (let i = 0; i < count; i++) {
    const a = at + i * 4096;
    receiveq.addChain([
      { addr: BigInt(a), len: 1024, write: true },
      { addr: BigInt(a + 1024), len: 1024, write: true },
    ]);
  }
  receiveq.publish();
}

/** Frames of `len` bytes (after a zero header) on the transmitq, one descriptor each. */
function offerTransmit(ram: GuestRam, transmitq: PackedDriver, count: number, at: number, fill: number): void {
  for (let i = 0; i < count; i++) {
    const a = at + i * 4096;
    ram.bytes.fill(0, a, a + HDR);
    ram.bytes.fill(fill + i, a + HDR, a + HDR + 100);
    transmitq.addChain([{ addr: BigInt(a), len: HDR + 100, write: false }]);
  }
  transmitq.publish();
}

describe.each(['native', 'ts'] as const)('packed rings through the device (%s data path)', (datapath) => {
  it('used-wrap: the lying used descriptor carries the other wrap counter, and the driver stops before it', async () => {
    const { fe, srv, ram, pair, lines } = await deviceWithPlan(
      datapath,
      'loopback',
      { seed: 1, rules: [{ name: 'wrap', on: 'transmitq0', do: 'used-wrap', after: 1, count: 1 }] },
      FEATURES,
    );
    try {
      const receiveq = fe.packedDriver(0, ram);
      const transmitq = fe.packedDriver(1, ram);
      offerReceive(receiveq, 8, 0x100000);
      native.eventfdWrite(pair.kicks.receiveq, 1n);
      offerTransmit(ram, transmitq, 3, 0x200000, 0x10);
      native.eventfdWrite(pair.kicks.transmitq, 1n);
      // The device sent all three (they loop back to the receiveq) and completed all three.
      const got: number[] = [];
      await waitFor(() => (got.push(...receiveq.takeUsed().map((u) => u.id)), got.length === 3), 5000, 'looped');
      await waitFor(() => lines.length === 1, 2000, 'the lie logged');
      expect(lines).toMatchObject([{ rule: 'wrap', do: 'used-wrap', vring: 1, event: 1, ringIdx: 1 }]);
      // §2.8.1, wrap counter 1: a used descriptor has AVAIL and USED both set. Slot 1 has
      // neither (the other counter's used), slots 0 and 2 are used.
      const flags = [0, 1, 2].map((pos) => transmitq.readDesc(pos).flags & 0x8080);
      expect(flags).toEqual([0x8080, 0x0000, 0x8080]);
      // The driver walks used descriptors in order: it sees the first and stops at the lie.
      expect(transmitq.takeUsed().map((u) => u.id)).toEqual([0]);
    } finally {
      fe.close();
      srv.stop();
    }
  });

  it('loop frames back, draw the rings, resume after GET_VRING_BASE, and show what a lost position costs', async () => {
    const srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, datapath);
    const { server, port } = await startHttp(srv.backend, '127.0.0.1', 0);
    const { fe, session, ram, pairs } = await bringUpDevice(srv, FEATURES);
    const kicks = pairs[0]?.kicks as { receiveq: number; transmitq: number };
    try {
      expect(session.packed()).toBe(true);
      const receiveq = fe.packedDriver(0, ram);
      const transmitq = fe.packedDriver(1, ram);
      offerReceive(receiveq, 8, 0x100000);
      native.eventfdWrite(kicks.receiveq, 1n);
      await waitFor(() => session.vrings[0]?.started === true);
      offerTransmit(ram, transmitq, 3, 0x200000, 0x10);
      native.eventfdWrite(kicks.transmitq, 1n);
      const got: { id: number; len: number }[] = [];
      await waitFor(
        () => (got.push(...receiveq.takeUsed().map(({ id, len }) => ({ id, len }))), got.length === 3),
        5000,
        'frames looped back',
      );
      // Each frame fills the first buffer of a list: ids 0, 1, 2, the header and 100 bytes.
      expect(got).toEqual([0, 1, 2].map((id) => ({ id, len: HDR + 100 })));
      for (let i = 0; i < 3; i++) expect(ram.bytes[0x100000 + i * 4096 + HDR]).toBe(0x10 + i);
      await waitFor(() => transmitq.takeUsed().length > 0 || session.counters(1).frames === 3);
      expect(session.counters(1).frames).toBe(3);

      // /rings: the receiveq's device positions after three lists of two descriptors.
      const snap = ringsOf(srv.backend);
      const rq = snap.vrings.find((v) => v.index === 0) as RingSnapshot;
      expect(rq.layout).toBe('packed');
      expect(rq.packed).toMatchObject({ availPos: 6, availWrap: 1, usedPos: 6, usedWrap: 1 });
      expect(rq.desc.filter((d) => d.state === 'avail')).toHaveLength(10);
      expect(rq.chains.map((c) => c.head)).toEqual([3, 4, 5, 6, 7]);
      expect(rq.desc[0]?.flags).toEqual(['WRITE', 'AVAIL', 'USED']); // a used descriptor, data written
      const tq = snap.vrings.find((v) => v.index === 1) as RingSnapshot;
      expect(tq.packed).toMatchObject({ availPos: 3, usedPos: 3 });
      if (datapath === 'native') {
        const profile = tempDir('vun-chromium-');
        try {
          const dom = await chromium(profile.dir, ['--dump-dom', `http://127.0.0.1:${port}/rings.html`]);
          const p0 = dom.split('<div class="vring"').find((p) => p.includes('data-vring="0"')) as string;
          expect(p0).toContain('packed · next avail 6 (wrap 1)   next used 6 (wrap 1)   in flight 0');
          expect(p0.match(/class="desc desc-avail"/g)).toHaveLength(10);
          expect(p0).toContain('avail     id 3: 6 → 7  (2048 bytes)');
        } finally {
          profile.cleanup();
        }
      }

      // GET_VRING_BASE: both positions (avail | used << 16), each position 6 with wrap 1.
      const r = await fe.request('GET_VRING_BASE', MockFrontend.state({ index: 0, num: 0 }));
      const base = r?.payload.readUInt32LE(4) as number;
      expect(base).toBe((0x8006 | (0x8006 << 16)) >>> 0);
      // Restarted there (buffers wait: it starts at SET_VRING_KICK), frames land in list 3 on.
      await fe.request('SET_VRING_BASE', MockFrontend.state({ index: 0, num: base }));
      const kick2 = fe.eventfd();
      await fe.request('SET_VRING_KICK', encodeU64(0n), { fds: [kick2] });
      await waitFor(() => session.vrings[0]?.started === true);
      offerTransmit(ram, transmitq, 2, 0x200000, 0x40);
      native.eventfdWrite(kicks.transmitq, 1n);
      const again: { id: number; len: number }[] = [];
      await waitFor(
        () => (again.push(...receiveq.takeUsed().map(({ id, len }) => ({ id, len }))), again.length === 2),
        5000,
        'frames after the resume',
      );
      expect(again).toEqual([3, 4].map((id) => ({ id, len: HDR + 100 })));
      expect(ram.bytes[0x100000 + 3 * 4096 + HDR]).toBe(0x40);

      // A front-end that lost the position restarts the ring at 0x8000 (as DPDK's virtio_user
      // does after a reconnect): the descriptors there are used ones, so the device sees no
      // buffer although three wait further on; frames for the guest are dropped.
      await fe.request('GET_VRING_BASE', MockFrontend.state({ index: 0, num: 0 }));
      await fe.request('SET_VRING_BASE', MockFrontend.state({ index: 0, num: 0x8000 }));
      const kick3 = fe.eventfd();
      await fe.request('SET_VRING_KICK', encodeU64(0n), { fds: [kick3] });
      native.eventfdWrite(kick3, 1n);
      await waitFor(() => session.vrings[0]?.started === true);
      const dropsBefore = session.counters(0).dropNoBuffers;
      offerTransmit(ram, transmitq, 1, 0x200000, 0x70);
      native.eventfdWrite(kicks.transmitq, 1n);
      await waitFor(() => session.counters(0).dropNoBuffers > dropsBefore, 5000, 'the frame dropped');
      expect(receiveq.takeUsed()).toEqual([]);
    } finally {
      server.close();
      const closed = srv.sessionClosed();
      fe.close();
      await closed;
      srv.stop();
    }
  }, 120_000);
});
