/**
 * Multi-queue isolation under a hostile guest (issue 12): each ring error the walk can find is
 * raised on queue pair 1 while pair 0 forwards a stream, and pair 0's frames are checked one
 * by one (all there, in order, byte for byte). Pair 1 ends broken with exactly that code;
 * nothing else breaks. MEMORY_FAULT, the one error the walk does not raise, has its own test
 * (memory-pulled.test.ts). Both data paths.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { RingError, ringErrorNames } from '../src/virtio/ring-errors.js';
import { DESC_F_NEXT, DESC_F_WRITE } from '../src/virtio/ring-types.js';
import { encodeU64, encodeVringAddr } from '../src/vhost-user/codec.js';
import type { Session } from '../src/vhost-user/session.js';
import { type DatapathKind, native, type Served, serve, shutdown, waitFor } from './helpers/harness.js';
import { type DriverPair, type GuestRam, MockFrontend } from './helpers/mock-frontend.js';
import type { RingDriver } from './helpers/ring-driver.js';

let srv: Served | undefined;
let fe: MockFrontend | undefined;
afterEach(async () => {
  await shutdown(srv, fe);
  srv = fe = undefined;
});

const HDR = 12;
const NUM = 256;
const BUF = 2048;
const RX0 = 0x100000; // pair 0's receive buffers (one per descriptor slot)
const TX0 = 0x200000; // pair 0's frames
const BAD = 0x300000n; // what pair 1's poisoned chains point at
const BIG_GPA = 0x1_0000_0000n; // an 8 GiB sparse region, for CHAIN_TOO_LONG
const ROUNDS = 8;
const PER_ROUND = 48;
const POISON_ROUND = 3;

interface Ctx {
  fe: MockFrontend;
  ram: GuestRam;
  p1: DriverPair;
}

const d = (addr: bigint, len: number, write = false) => ({ addr, len, write });

/** How each code is raised on pair 1's transmitq (the walk's codes; kick afterwards). */
const poisons: Record<string, { indirect: boolean; raise(c: Ctx): Promise<void> | void }> = {
  AVAIL_IDX_JUMP: {
    indirect: true,
    raise: ({ p1 }) => {
      p1.transmitq.offer(p1.transmitq.addChain([d(BAD, 64)]));
      p1.transmitq.publish(p1.transmitq.availIdx + NUM + 1);
    },
  },
  HEAD_OUT_OF_RANGE: { indirect: true, raise: ({ p1 }) => offer(p1.transmitq, NUM) },
  NEXT_OUT_OF_RANGE: {
    indirect: true,
    raise: ({ p1 }) => {
      p1.transmitq.rawDesc(5, BAD, 64, DESC_F_NEXT, NUM + 1);
      offer(p1.transmitq, 5);
    },
  },
  DESC_LOOP: {
    indirect: true,
    raise: ({ p1 }) => {
      p1.transmitq.rawDesc(5, BAD, 64, DESC_F_NEXT, 5);
      offer(p1.transmitq, 5);
    },
  },
  INDIRECT_BAD_LEN: {
    indirect: true,
    raise: ({ p1 }) => offer(p1.transmitq, p1.transmitq.addIndirect([d(BAD, 64)], { tableLen: 24 })),
  },
  INDIRECT_NESTED: {
    indirect: true,
    raise: ({ p1 }) => offer(p1.transmitq, p1.transmitq.addIndirect([d(BAD, 64)], { extraFlags: DESC_F_NEXT })),
  },
  INDIRECT_NOT_NEGOTIATED: {
    indirect: false,
    raise: ({ p1 }) => offer(p1.transmitq, p1.transmitq.addIndirect([d(BAD, 64)])),
  },
  ADDR_OUT_OF_MEMORY: {
    indirect: true,
    raise: ({ p1 }) => {
      p1.transmitq.rawDesc(5, 0x4000_0000n, 64, 0, 0);
      offer(p1.transmitq, 5);
    },
  },
  ZERO_LEN: { indirect: true, raise: ({ p1 }) => offer(p1.transmitq, p1.transmitq.addChain([d(BAD, 0)])) },
  READABLE_AFTER_WRITABLE: {
    indirect: true,
    raise: ({ p1 }) => {
      p1.transmitq.rawDesc(5, BAD, 64, DESC_F_WRITE | DESC_F_NEXT, 6);
      p1.transmitq.rawDesc(6, BAD + 64n, 64, 0, 0);
      offer(p1.transmitq, 5);
    },
  },
  CHAIN_TOO_LONG: {
    indirect: true,
    raise: async ({ fe, p1 }) => {
      // 0xffffffff + 1 bytes in an 8 GiB region (a sparse memfd: nothing is touched).
      // The backend maps it whole (the TS data plane views it in pieces: a JS view stops at 4 GiB).
      const fd = native.memfdCreate('big-ram', 2 ** 33);
      const region = { guestAddr: BIG_GPA, size: 1n << 33n, userAddr: 0x7f4000000000n, mmapOffset: 0n };
      const ack = await fe.acked('ADD_MEM_REG', MockFrontend.region(region), [fd]);
      native.close(fd);
      expect(ack).toBe(0n);
      p1.transmitq.rawDesc(5, BIG_GPA, 0xffffffff, DESC_F_NEXT, 6);
      p1.transmitq.rawDesc(6, BIG_GPA, 1, 0, 0);
      offer(p1.transmitq, 5);
    },
  },
  RING_ADDR_INVALID: {
    indirect: true,
    raise: async ({ fe, ram, p1 }) => {
      // The front-end stops the ring and gives it a misaligned descriptor table (§2.7: 16).
      await fe.request('GET_VRING_BASE', MockFrontend.state({ index: 3, num: 0 }));
      const base = ram.region.userAddr + 0x30000n; // where vring 3's areas are (MockFrontend.setupVring)
      await fe.acked(
        'SET_VRING_ADDR',
        encodeVringAddr({
          index: 3,
          flags: 0,
          descUserAddr: base + 8n,
          availUserAddr: base + BigInt(NUM * 16),
          usedUserAddr: base + 0x8000n,
          logGuestAddr: 0n,
        }),
      );
      const kick = fe.eventfd();
      await fe.acked('SET_VRING_KICK', encodeU64(3n), [kick]);
      p1.kicks.transmitq = kick;
    },
  },
  TOO_MANY_SEGMENTS: {
    indirect: true,
    raise: ({ p1 }) => offer(p1.transmitq, p1.transmitq.addIndirect(Array.from({ length: 1025 }, () => d(BAD, 1)))),
  },
};

function offer(r: RingDriver, head: number): void {
  r.offer(head);
  r.publish();
}

function frameOf(seq: number): Buffer {
  const f = Buffer.alloc(60 + (seq % 11) * 130, (seq * 29) & 0xff);
  f.writeUInt32BE(seq, 0);
  return f;
}

async function device(kind: DatapathKind, indirect: boolean) {
  srv = serve({ queuePairs: 2 }, { kind: 'loopback' }, kind);
  const next = srv.nextSession();
  fe = srv.connect();
  const session: Session = await next;
  const broken = new Map<number, string>();
  session.onChange((c) => {
    if (c.what === 'vring broken') broken.set(Number(c.vring), String(c.error));
  });
  await fe.handshake();
  const features = featureMask(
    F.F_VERSION_1,
    F.VHOST_USER_F_PROTOCOL_FEATURES,
    ...(indirect ? [F.RING_F_INDIRECT_DESC] : []),
  );
  const { ram, pairs } = await fe.bringUp(features, 2);
  return { session, ram, pairs: pairs as [DriverPair, DriverPair], broken };
}

describe.each(['native', 'ts'] as const)('%s data path: one queue pair broken, the other forwarding', (kind) => {
  it('every walk error code has a poison here', () => {
    // The packed ring's own codes are held by test/packed-ring.test.ts; this device runs split rings.
    const walk = ringErrorNames.filter(
      (n) => !['OK', 'MEMORY_FAULT', 'DESC_NOT_AVAILABLE', 'ID_OUT_OF_RANGE'].includes(n),
    );
    expect(Object.keys(poisons).sort()).toEqual([...walk].sort());
  });

  it.each(Object.keys(poisons))('%s on pair 1: pair 0 forwards every frame, in order and intact', async (code) => {
    const poison = poisons[code] as (typeof poisons)[string];
    const { session, ram, pairs, broken } = await device(kind, poison.indirect);
    const [p0, p1] = pairs;
    // Pair 1 is running too: a frame through it first.
    p1.receiveq.offer(p1.receiveq.addChain([d(0x380000n, BUF, true)]));
    p1.receiveq.publish();
    native.eventfdWrite(p1.kicks.receiveq, 1n);
    await waitFor(() => session.vrings[2]?.started === true, 2000, 'receiveq 2 started');
    ram.bytes.fill(0, 0x390000, 0x390000 + HDR + 60);
    p1.transmitq.offer(p1.transmitq.addChain([d(0x390000n, HDR + 60)]));
    p1.transmitq.publish();
    native.eventfdWrite(p1.kicks.transmitq, 1n);
    await waitFor(() => p1.receiveq.usedIdx() === 1, 2000, 'pair 1 forwarding');

    let sent = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // Receive buffers for this round (descriptor slots are reused: every earlier chain is done).
      for (let k = 0; k < PER_ROUND; k++) {
        const slot = (sent + k) % NUM;
        p0.receiveq.offer(p0.receiveq.addChain([d(BigInt(RX0 + slot * BUF), BUF, true)]));
      }
      p0.receiveq.publish();
      native.eventfdWrite(p0.kicks.receiveq, 1n);
      for (let k = 0; k < PER_ROUND; k++) {
        const seq = sent + k;
        const f = frameOf(seq);
        const at = TX0 + (seq % NUM) * BUF;
        ram.bytes.fill(0, at, at + HDR);
        ram.bytes.set(f, at + HDR);
        p0.transmitq.offer(p0.transmitq.addChain([d(BigInt(at), HDR + f.length)]));
      }
      p0.transmitq.publish();
      native.eventfdWrite(p0.kicks.transmitq, 1n);
      if (round === POISON_ROUND) {
        await poison.raise({ fe: fe as MockFrontend, ram, p1 });
        native.eventfdWrite(p1.kicks.transmitq, 1n);
      }
      const want = sent + PER_ROUND;
      await waitFor(() => p0.receiveq.usedIdx() === (want & 0xffff), 5000, `pair 0: ${want} frames`);
      for (let seq = sent; seq < want; seq++) {
        const u = p0.receiveq.usedElem(seq);
        const f = frameOf(seq);
        expect(u.len, `frame ${seq}`).toBe(HDR + f.length);
        const at = RX0 + (seq % NUM) * BUF + HDR;
        expect(Buffer.from(ram.bytes.subarray(at, at + f.length)).equals(f), `frame ${seq} bytes`).toBe(true);
      }
      sent = want;
    }
    await waitFor(() => broken.has(3), 5000, 'transmitq 3 broken');
    expect(Object.fromEntries(broken)).toEqual({ 3: code });
    expect(RingError[code as keyof typeof RingError]).toBeGreaterThan(0);
    expect(session.counters(3).ringErrors).toBe(1);
    expect(session.counters(1).frames).toBe(ROUNDS * PER_ROUND);
  });
});
