/**
 * Every handled request, through a real socket, against an in-process backend; REPLY_ACK;
 * repetition per queue pair; ring start/stop semantics.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { featureMask, hasFeature, ProtocolFeature, VirtioFeature } from '../src/features.js';
import { encodeU64, Flags, Request } from '../src/vhost-user/codec.js';
import { MAX_MEM_SLOTS } from '../src/vhost-user/memory-table.js';
import {
  OFFERED_FEATURES,
  OFFERED_PROTOCOL_FEATURES,
  offeredFeatures,
  type Session,
} from '../src/vhost-user/session.js';
import { native, openFds, type Served, serve, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

const { state, region } = { state: MockFrontend.state, region: MockFrontend.region };

let srv: Served;
let fe: MockFrontend;
let session: Session;
let fdsBefore: number;

async function open(queuePairs = 2): Promise<void> {
  srv = serve({ queuePairs });
  const next = srv.nextSession();
  fe = srv.connect();
  session = await next;
}

beforeEach(() => {
  fdsBefore = openFds();
});

afterEach(async () => {
  const closed = srv.sessionClosed();
  fe.close();
  await closed;
  srv.stop();
  expect(native.mappingCount()).toBe(0);
  expect(openFds()).toBe(fdsBefore);
});

describe('negotiation', () => {
  it('offers exactly the implemented features and protocol features', async () => {
    await open(4);
    const hs = await fe.handshake();
    expect(hs.features).toBe(offeredFeatures(4));
    expect(hasFeature(hs.features, VirtioFeature.NET_F_MQ)).toBe(true);
    expect(hasFeature(offeredFeatures(1), VirtioFeature.NET_F_MQ)).toBe(false);
    expect(offeredFeatures(1, 'split')).toBe(OFFERED_FEATURES);
    expect(hasFeature(hs.features, VirtioFeature.F_VERSION_1)).toBe(true);
    expect(hasFeature(hs.features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)).toBe(true);
    expect(hs.protocolFeatures).toBe(OFFERED_PROTOCOL_FEATURES);
    for (const bit of [
      'MQ',
      'LOG_SHMFD',
      'REPLY_ACK',
      'NET_MTU',
      'CONFIGURE_MEM_SLOTS',
      'RARP',
      'STATUS',
      'RESET_DEVICE',
    ] as const) {
      expect(hasFeature(hs.protocolFeatures, ProtocolFeature[bit]), bit).toBe(true);
    }
    for (const bit of ['BACKEND_REQ', 'CONFIG', 'INFLIGHT_SHMFD', 'PAGEFAULT'] as const) {
      expect(hasFeature(hs.protocolFeatures, ProtocolFeature[bit]), bit).toBe(false);
    }
    expect(hs.queues).toBe(4n);
    expect(session.owner).toBe(true);
    expect(session.ackedProtocolFeatures).toBe(OFFERED_PROTOCOL_FEATURES);
  });

  it('acks SET_FEATURES with REPLY_ACK and records the features', async () => {
    await open();
    await fe.handshake();
    const f = featureMask(VirtioFeature.F_VERSION_1, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
    expect(await fe.acked('SET_FEATURES', encodeU64(f))).toBe(0n);
    expect(session.ackedFeatures).toBe(f);
  });

  it('without REPLY_ACK negotiated, need_reply gets no reply', async () => {
    await open();
    await fe.handshake({ replyAck: false });
    fe.send(Request.SET_FEATURES, encodeU64(featureMask(VirtioFeature.F_VERSION_1)), { needReply: true });
    // GET_FEATURES's reply must be the next message: nothing was sent for SET_FEATURES.
    const r = await fe.request('GET_FEATURES');
    expect(r?.request).toBe(Request.GET_FEATURES);
    expect(session.ackedFeatures).toBe(featureMask(VirtioFeature.F_VERSION_1));
  });

  it('replies carry version 1 and the reply flag, and never need_reply', async () => {
    await open();
    fe.send(Request.GET_FEATURES);
    const r = await fe.nextReply();
    expect(r.flags).toBe(Flags.VERSION | Flags.REPLY);
    expect(r.payload.length).toBe(8);
  });

  it('closes on SET_FEATURES with a bit never offered', async () => {
    await open();
    await fe.handshake();
    fe.send(Request.SET_FEATURES, encodeU64(featureMask(VirtioFeature.F_SR_IOV)));
    await fe.expectClosed();
  });

  it('closes on SET_PROTOCOL_FEATURES with a bit never offered', async () => {
    await open();
    fe.send(Request.SET_PROTOCOL_FEATURES, encodeU64(featureMask(ProtocolFeature.BACKEND_REQ)));
    await fe.expectClosed();
  });
});

describe('memory', () => {
  it('SET_MEM_TABLE maps regions and replaces the table atomically', async () => {
    await open();
    await fe.handshake();
    const a = fe.guestRam(1 << 20, 0n, 0x7f00_0000_0000n);
    const b = fe.guestRam(1 << 20, 0x1_0000_0000n, 0x7f10_0000_0000n);
    expect(await fe.acked('SET_MEM_TABLE', MockFrontend.memTable([a.region, b.region]), [a.fd, b.fd])).toBe(0n);
    expect(session.memory.regions.length).toBe(2);
    expect(session.memory.findGpa(0x1_0000_0000n + 16n, 8n)?.userAddr).toBe(0x7f10_0000_0000n);
    expect(session.memory.findGpa((1n << 20n) - 4n, 8n)).toBeUndefined();
    // A second table with one region replaces both.
    expect(await fe.acked('SET_MEM_TABLE', MockFrontend.memTable([a.region]), [a.fd])).toBe(0n);
    expect(session.memory.regions.length).toBe(1);
    // A failing table (overlapping regions) leaves the old one in place.
    const overlap = { ...a.region, userAddr: 0x7f20_0000_0000n };
    expect(await fe.acked('SET_MEM_TABLE', MockFrontend.memTable([a.region, overlap]), [a.fd, a.fd])).toBe(1n);
    expect(session.memory.regions.length).toBe(1);
    fe.unmap(a);
    fe.unmap(b);
  });

  it('ADD_MEM_REG repeated per queue pair is a reference, not an overlap; REM_MEM_REG drops one', async () => {
    await open(4);
    await fe.handshake();
    const a = fe.guestRam(1 << 16, 0n, 0x7f00_0000_0000n);
    const before = native.mappingCount();
    for (let pair = 0; pair < 4; pair++) expect(await fe.acked('ADD_MEM_REG', region(a.region), [a.fd])).toBe(0n);
    expect(session.memory.regions.length).toBe(1);
    expect(native.mappingCount()).toBe(before + 1);
    for (let pair = 0; pair < 3; pair++) expect(await fe.acked('REM_MEM_REG', region(a.region))).toBe(0n);
    expect(session.memory.regions.length).toBe(1);
    expect(await fe.acked('REM_MEM_REG', region(a.region))).toBe(0n);
    expect(session.memory.regions.length).toBe(0);
    expect(native.mappingCount()).toBe(before);
    // A different region at the same guest address is still an overlap.
    expect(await fe.acked('ADD_MEM_REG', region(a.region), [a.fd])).toBe(0n);
    expect(await fe.acked('ADD_MEM_REG', region({ ...a.region, userAddr: 0x7f10_0000_0000n }), [a.fd])).toBe(1n);
    fe.unmap(a);
  });

  it('the backend sees the bytes the front-end wrote into shared memory', async () => {
    await open();
    await fe.handshake();
    const a = fe.guestRam(1 << 16, 0n, 0x7f00_0000_0000n);
    a.bytes.set([0xde, 0xad, 0xbe, 0xef], 100);
    expect(await fe.acked('ADD_MEM_REG', region(a.region), [a.fd])).toBe(0n);
    const m = session.memory.regions[0];
    const view = new Uint8Array(native.mappingBuffer(m?.mappingId as number));
    expect([...view.subarray(100, 104)]).toEqual([0xde, 0xad, 0xbe, 0xef]);
    view[200] = 0x42;
    expect(a.bytes[200]).toBe(0x42);
    fe.unmap(a);
  });

  it(`GET_MAX_MEM_SLOTS is ${MAX_MEM_SLOTS}; ADD_MEM_REG fills them, the next is refused, REM_MEM_REG frees one`, async () => {
    await open();
    await fe.handshake();
    expect(await fe.u64('GET_MAX_MEM_SLOTS')).toBe(BigInt(MAX_MEM_SLOTS));
    const ram = fe.guestRam(4096);
    const at = (i: number) => ({
      guestAddr: BigInt(i) * 0x1000n,
      size: 0x1000n,
      userAddr: 0x7f00_0000_0000n + BigInt(i) * 0x1000n,
      mmapOffset: 0n,
    });
    for (let i = 0; i < MAX_MEM_SLOTS; i++) {
      expect(await fe.acked('ADD_MEM_REG', region(at(i)), [ram.fd])).toBe(0n);
    }
    expect(session.memory.regions.length).toBe(MAX_MEM_SLOTS);
    expect(await fe.acked('ADD_MEM_REG', region(at(MAX_MEM_SLOTS)), [ram.fd])).toBe(1n);
    // QEMU sends the fd with REM_MEM_REG; the mmap offset is ignored when matching.
    expect(await fe.acked('REM_MEM_REG', region({ ...at(7), mmapOffset: 0x999n }), [ram.fd])).toBe(0n);
    expect(await fe.acked('REM_MEM_REG', region(at(8)))).toBe(0n);
    expect(session.memory.regions.length).toBe(MAX_MEM_SLOTS - 2);
    expect(await fe.acked('REM_MEM_REG', region(at(7)))).toBe(1n);
    expect(await fe.acked('ADD_MEM_REG', region(at(7)), [ram.fd])).toBe(0n);
    fe.unmap(ram);
  });
});

describe('vrings', () => {
  async function ready(queuePairs = 2) {
    await open(queuePairs);
    await fe.handshake();
    await fe.acked(
      'SET_FEATURES',
      encodeU64(featureMask(VirtioFeature.F_VERSION_1, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)),
    );
    const ram = fe.guestRam(1 << 20);
    await fe.acked('SET_MEM_TABLE', MockFrontend.memTable([ram.region]), [ram.fd]);
    return ram;
  }

  it('starts a ring on its first kick, not on SET_VRING_KICK', async () => {
    const ram = await ready();
    const { kick } = await fe.setupVring(0, ram, { base: 17 });
    const v = session.vrings[0];
    expect(v?.num).toBe(256);
    expect(v?.lastAvailIdx).toBe(17);
    expect(v?.kickFd).toBeGreaterThanOrEqual(0);
    await new Promise((r) => setTimeout(r, 30));
    expect(v?.started).toBe(false);
    native.eventfdWrite(kick, 1n);
    await waitFor(() => v?.started === true, 2000, 'ring start');
    fe.unmap(ram);
  });

  it('a front-end that lost the ring position (SET_VRING_BASE 0, buffers waiting) is resumed from used->idx at SET_VRING_KICK', async () => {
    // What DPDK's virtio_user does when a restarted back-end reconnects: the driver is at
    // avail 44, the dead back-end completed up to 40, and SET_VRING_BASE says 0.
    const ram = await ready();
    const changes: Record<string, unknown>[] = [];
    session.onChange((c) => changes.push(c));
    const dv = new DataView(ram.bytes.buffer, ram.bytes.byteOffset);
    dv.setUint16(0x10000 + 256 * 16 + 2, 44, true); // avail->idx of vring 1
    dv.setUint16(0x10000 + 0x8000 + 2, 40, true); // used->idx of vring 1
    await fe.setupVring(1, ram, { base: 0 });
    const v = session.vrings[1];
    // Started without a kick: the driver kicked for those 4 buffers already, to the old back-end.
    await waitFor(() => v?.started === true, 2000, 'ring start at SET_VRING_KICK');
    expect(changes).toContainEqual(
      expect.objectContaining({ what: 'vring resumed from used->idx', vring: 1, setVringBase: 0, usedIdx: 40 }),
    );
    expect(changes).toContainEqual(
      expect.objectContaining({ what: 'vring started', vring: 1, reason: 'kick fd set with buffers already waiting' }),
    );
    const r = await fe.request('GET_VRING_BASE', state({ index: 1, num: 0 }));
    // Resumed at 40: the first waiting chain (zeroed memory: a descriptor of length 0) breaks
    // the ring there, so the position handed back is 40, not 0 (nor 44).
    expect(r?.payload.readUInt32LE(4)).toBe(40);
    fe.unmap(ram);
  });

  it('GET_VRING_BASE stops the ring, returns the avail index and closes kick and call fds', async () => {
    const ram = await ready();
    // A driver at 0xfffe (next to the wrap): avail->idx and used->idx in guest memory agree.
    const dv = new DataView(ram.bytes.buffer, ram.bytes.byteOffset);
    dv.setUint16(0x10000 + 256 * 16 + 2, 0xfffe, true);
    dv.setUint16(0x10000 + 0x8000 + 2, 0xfffe, true);
    const { kick } = await fe.setupVring(1, ram, { base: 0xfffe });
    native.eventfdWrite(kick, 1n);
    const v = session.vrings[1];
    await waitFor(() => v?.started === true);
    // Count the fds the addon owns (the session's): the worker's own epoll and stop fds also
    // close when its last ring stops, which /proc/self/fd would count too.
    const before = native.ownedFds();
    const r = await fe.request('GET_VRING_BASE', state({ index: 1, num: 0 }));
    expect(r?.payload.readUInt32LE(0)).toBe(1);
    expect(r?.payload.readUInt32LE(4)).toBe(0xfffe);
    expect(v?.started).toBe(false);
    expect(v?.kickFd).toBe(-1);
    expect(v?.callFd).toBe(-1);
    expect(native.ownedFds()).toBe(before - 2);
    // A kick after the stop does not restart it: the fd is gone.
    native.eventfdWrite(kick, 1n);
    await new Promise((r2) => setTimeout(r2, 30));
    expect(v?.started).toBe(false);
    // Restart: new kick fd, base kept unless set again.
    const kick2 = fe.eventfd();
    await fe.acked('SET_VRING_KICK', encodeU64(1n), [kick2]);
    native.eventfdWrite(kick2, 1n);
    await waitFor(() => v?.started === true);
    fe.unmap(ram);
  });

  it('the no-fd bit starts a polled ring at once and carries no fd', async () => {
    const ram = await ready();
    await fe.request('SET_VRING_NUM', state({ index: 2, num: 64 }));
    expect(await fe.acked('SET_VRING_KICK', MockFrontend.vringFileNoFd(2))).toBe(0n);
    expect(session.vrings[2]?.started).toBe(true);
    expect(session.vrings[2]?.kickPolling).toBe(true);
    expect(await fe.acked('SET_VRING_CALL', MockFrontend.vringFileNoFd(2))).toBe(0n);
    expect(session.vrings[2]?.callFd).toBe(-1);
    fe.unmap(ram);
  });

  it('SET_VRING_ENABLE decides enablement once protocol features are negotiated', async () => {
    const ram = await ready();
    const v = session.vrings[0];
    if (!v) throw new Error('no vring 0');
    expect(session.isEnabled(v)).toBe(false);
    expect(await fe.acked('SET_VRING_ENABLE', state({ index: 0, num: 1 }))).toBe(0n);
    expect(session.isEnabled(v)).toBe(true);
    expect(await fe.acked('SET_VRING_ENABLE', state({ index: 0, num: 0 }))).toBe(0n);
    expect(session.isEnabled(v)).toBe(false);
    expect(await fe.acked('SET_VRING_ENABLE', state({ index: 0, num: 2 }))).toBe(1n);
    fe.unmap(ram);
  });

  it('without VHOST_USER_F_PROTOCOL_FEATURES acked, rings are enabled', async () => {
    await open();
    await fe.handshake();
    await fe.acked('SET_FEATURES', encodeU64(featureMask(VirtioFeature.F_VERSION_1)));
    expect(session.isEnabled(session.vrings[1] as never)).toBe(true);
  });

  it('refuses bad sizes and bases with a NACK and keeps serving', async () => {
    await ready();
    expect(await fe.acked('SET_VRING_NUM', state({ index: 0, num: 100 }))).toBe(1n);
    expect(await fe.acked('SET_VRING_NUM', state({ index: 0, num: 0 }))).toBe(1n);
    expect(await fe.acked('SET_VRING_NUM', state({ index: 0, num: 65536 }))).toBe(1n);
    expect(await fe.acked('SET_VRING_NUM', state({ index: 0, num: 32768 }))).toBe(0n);
    expect(await fe.acked('SET_VRING_BASE', state({ index: 0, num: 0x10000 }))).toBe(1n);
    expect(session.vrings[0]?.num).toBe(32768);
  });

  it('is idempotent across the per-queue-pair repetition QEMU does', async () => {
    await open(4);
    const ram = fe.guestRam(1 << 20);
    const f = featureMask(VirtioFeature.F_VERSION_1, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
    // QEMU runs one vhost_dev per queue pair, each repeating the device-wide messages.
    for (let pair = 0; pair < 4; pair++) {
      await fe.handshake();
      expect(await fe.acked('SET_FEATURES', encodeU64(f))).toBe(0n);
      expect(await fe.acked('SET_MEM_TABLE', MockFrontend.memTable([ram.region]), [ram.fd])).toBe(0n);
      for (const index of [2 * pair, 2 * pair + 1]) {
        const { kick } = await fe.setupVring(index, ram, { num: 256 });
        expect(await fe.acked('SET_VRING_ENABLE', state({ index, num: 1 }))).toBe(0n);
        native.eventfdWrite(kick, 1n);
      }
    }
    await waitFor(() => session.vrings.every((v) => v.started));
    expect(session.memory.regions.length).toBe(1);
    expect(session.ackedFeatures).toBe(f);
    expect(session.vrings.every((v) => session.isEnabled(v))).toBe(true);
    fe.unmap(ram);
  });
});

describe('device requests', () => {
  it('SET_STATUS/GET_STATUS, NET_SET_MTU, SEND_RARP', async () => {
    await open();
    await fe.handshake();
    expect(await fe.acked('SET_STATUS', encodeU64(0x0fn))).toBe(0n);
    expect(await fe.u64('GET_STATUS')).toBe(0x0fn);
    expect(await fe.acked('SET_STATUS', encodeU64(0x100n))).toBe(1n);
    expect(await fe.acked('NET_SET_MTU', encodeU64(9000n))).toBe(0n);
    expect(session.mtu).toBe(9000);
    expect(await fe.acked('NET_SET_MTU', encodeU64(67n))).toBe(1n);
    expect(await fe.acked('NET_SET_MTU', encodeU64(65536n))).toBe(1n);
    const mac = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0]);
    expect(await fe.acked('SEND_RARP', mac)).toBe(0n);
    expect(session.rarpMac).toBe('52:54:00:12:34:56');
  });

  it.each(['RESET_DEVICE', 'RESET_OWNER'] as const)(
    '%s stops rings, closes their fds, clears features',
    async (req) => {
      await open();
      await fe.handshake();
      await fe.acked('SET_FEATURES', encodeU64(featureMask(VirtioFeature.F_VERSION_1)));
      const ram = fe.guestRam(1 << 20);
      await fe.acked('SET_MEM_TABLE', MockFrontend.memTable([ram.region]), [ram.fd]);
      const { kick } = await fe.setupVring(0, ram);
      native.eventfdWrite(kick, 1n);
      await waitFor(() => session.vrings[0]?.started === true);
      await fe.acked('SET_STATUS', encodeU64(0x0fn));
      const before = native.ownedFds();
      expect(await fe.acked(req, undefined)).toBe(0n);
      expect(session.vrings[0]?.started).toBe(false);
      expect(session.vrings[0]?.kickFd).toBe(-1);
      expect(session.ackedFeatures).toBeUndefined();
      expect(await fe.u64('GET_STATUS')).toBe(0n);
      expect(native.ownedFds()).toBe(before - 2);
      // The session goes on: negotiate again.
      expect(await fe.acked('SET_FEATURES', encodeU64(featureMask(VirtioFeature.F_VERSION_1)))).toBe(0n);
      fe.unmap(ram);
    },
  );

  it('SET_VRING_ERR stores and replaces its fd', async () => {
    await open();
    await fe.handshake();
    const e1 = fe.eventfd();
    const e2 = fe.eventfd();
    expect(await fe.acked('SET_VRING_ERR', encodeU64(1n), [e1])).toBe(0n);
    const before = openFds();
    expect(await fe.acked('SET_VRING_ERR', encodeU64(1n), [e2])).toBe(0n);
    expect(openFds()).toBe(before); // old one closed, new one kept
    expect(session.vrings[1]?.errFd).toBeGreaterThanOrEqual(0);
  });
});

describe('lint', () => {
  it('counts rule violations, logs each rule once, and goes on serving', async () => {
    await open();
    const changes: string[] = [];
    session.onChange((c) => changes.push(`${c.what}:${String(c.rule ?? '')}`));
    // SET_VRING_ENABLE before the protocol features were negotiated.
    await fe.request('SET_VRING_ENABLE', state({ index: 0, num: 1 }));
    // Protocol features without MQ and STATUS, then requests that need them.
    const offered = await fe.u64('GET_PROTOCOL_FEATURES');
    const without = offered & ~featureMask(ProtocolFeature.MQ, ProtocolFeature.STATUS, ProtocolFeature.REPLY_ACK);
    await fe.request('SET_PROTOCOL_FEATURES', encodeU64(without));
    expect(await fe.u64('GET_QUEUE_NUM')).toBe(2n);
    expect(await fe.u64('GET_QUEUE_NUM')).toBe(2n);
    expect(await fe.u64('GET_STATUS')).toBe(0n);
    // need_reply without REPLY_ACK: no reply comes, the next request is answered.
    fe.send(Request.SET_OWNER, undefined, { needReply: true });
    expect(await fe.u64('GET_FEATURES')).toBeGreaterThan(0n);
    expect(Object.fromEntries(session.lint)).toEqual({
      'enable-before-protocol-features': 1,
      'request-without-protocol-feature': 3,
      'need-reply-without-reply-ack': 1,
    });
    expect(changes.filter((c) => c.startsWith('lint:'))).toEqual([
      'lint:enable-before-protocol-features',
      'lint:request-without-protocol-feature',
      'lint:need-reply-without-reply-ack',
    ]);
  });
});
