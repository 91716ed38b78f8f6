/**
 * The packed ring in the control plane: what `--ring` offers and requires, and the ring
 * positions vhost-user carries for a packed ring (vhost-user.rst "Vring state description":
 * bits 0-14 the next descriptor, bit 15 the driver's wrap counter; QEMU adds the used position
 * and the device's wrap counter in bits 16-31), through a real socket.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { featureMask, hasFeature, VirtioFeature } from '../src/features.js';
import { encodeU64, Request } from '../src/vhost-user/codec.js';
import { offeredFeatures, type RingLayout, type Session } from '../src/vhost-user/session.js';
import { bringUpDevice, native, openFds, type Served, serve, waitFor } from './helpers/harness.js';
import type { MockFrontend } from './helpers/mock-frontend.js';
import { MockFrontend as FE } from './helpers/mock-frontend.js';

let srv: Served | undefined;
let fe: MockFrontend | undefined;

async function open(ring?: RingLayout): Promise<{ session: Session; fe: MockFrontend }> {
  srv = serve({ queuePairs: 1, ...(ring ? { ring } : {}) });
  const next = srv.nextSession();
  fe = srv.connect();
  const session = await next;
  await fe.handshake();
  return { session, fe };
}

afterEach(async () => {
  if (srv) {
    const closed = srv.sessionClosed();
    fe?.close();
    await closed;
    srv.stop();
  }
  srv = fe = undefined;
  expect(native.mappingCount()).toBe(0);
});

const PACKED = featureMask(VirtioFeature.F_RING_PACKED);
const BASE = offeredFeatures(1, 'split');

describe('--ring', () => {
  it('auto (the default) offers VIRTIO_F_RING_PACKED; split does not', async () => {
    expect(hasFeature(offeredFeatures(1), VirtioFeature.F_RING_PACKED)).toBe(true);
    expect(hasFeature(offeredFeatures(1, 'packed'), VirtioFeature.F_RING_PACKED)).toBe(true);
    expect(hasFeature(BASE, VirtioFeature.F_RING_PACKED)).toBe(false);
    const { fe: f } = await open('split');
    expect(hasFeature(await f.u64('GET_FEATURES'), VirtioFeature.F_RING_PACKED)).toBe(false);
  });

  it('auto lets the driver choose: a split ack gives split rings, a packed ack packed ones', async () => {
    const { session, fe: f } = await open('auto');
    expect(await f.acked('SET_FEATURES', encodeU64(BASE))).toBe(0n);
    expect(session.packed()).toBe(false);
    expect(await f.acked('SET_FEATURES', encodeU64(BASE | PACKED))).toBe(0n);
    expect(session.packed()).toBe(true);
  });

  it('packed refuses a driver that does not ack it (VUN_FEATURE_REQUIRED), and closes cleanly', async () => {
    const fds = openFds();
    const { fe: f } = await open('packed');
    const closed = (srv as Served).sessionClosed();
    f.send(Request.SET_FEATURES, encodeU64(BASE));
    const err = await closed;
    expect((err as { code?: string } | undefined)?.code).toBe('VUN_FEATURE_REQUIRED');
    await f.expectClosed();
    f.close();
    (srv as Served).stop();
    srv = fe = undefined;
    expect(openFds()).toBe(fds);
  });
});

describe('a running ring keeps its layout', () => {
  it('SET_FEATURES turning RING_PACKED on while a ring runs closes the session (VUN_FEATURE_RING_LAYOUT_CHANGED)', async () => {
    srv = serve({ queuePairs: 1 });
    const d = await bringUpDevice(srv, BASE);
    fe = d.fe;
    native.eventfdWrite(d.pairs[0]?.kicks.receiveq as number, 1n);
    await waitFor(() => d.session.vrings[0]?.started === true);
    const closed = srv.sessionClosed();
    d.fe.send(Request.SET_FEATURES, encodeU64(BASE | PACKED));
    expect(((await closed) as { code?: string } | undefined)?.code).toBe('VUN_FEATURE_RING_LAYOUT_CHANGED');
    await d.fe.expectClosed();
    d.fe.close();
    srv.stop();
    srv = fe = undefined;
  });
});

describe('packed ring positions over vhost-user', () => {
  const state = FE.state;
  it('SET_VRING_BASE carries both positions; GET_VRING_BASE gives them back', async () => {
    const { session, fe: f } = await open();
    await f.acked('SET_FEATURES', encodeU64(BASE | PACKED));
    await f.acked('SET_VRING_NUM', state({ index: 1, num: 256 }));
    // avail: position 3, wrap 1; used: position 1, wrap 1 (two buffers in flight).
    await f.acked('SET_VRING_BASE', state({ index: 1, num: (0x8003 | (0x8001 << 16)) >>> 0 }));
    expect(session.vrings[1]?.lastAvailIdx).toBe(0x8003);
    expect(session.vrings[1]?.usedIdx).toBe(0x8001);
    const r = await f.request('GET_VRING_BASE', state({ index: 1, num: 0 }));
    expect(r?.payload.readUInt32LE(4)).toBe((0x8003 | (0x8001 << 16)) >>> 0);
  });

  it("only the low half (DPDK's virtio_user): used starts where avail does", async () => {
    const { session, fe: f } = await open();
    await f.acked('SET_FEATURES', encodeU64(BASE | PACKED));
    await f.acked('SET_VRING_BASE', state({ index: 0, num: 0x8000 }));
    expect(session.vrings[0]?.usedIdx).toBe(0x8000);
    const r = await f.request('GET_VRING_BASE', state({ index: 0, num: 0 }));
    expect(r?.payload.readUInt32LE(4)).toBe(0x80008000);
  });

  it('a split ring still refuses a base over 16 bits', async () => {
    const { fe: f } = await open();
    await f.acked('SET_FEATURES', encodeU64(BASE));
    expect(await f.acked('SET_VRING_BASE', state({ index: 0, num: 0x18000 }))).not.toBe(0n);
  });
});
