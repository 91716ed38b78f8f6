/**
 * Memory pulled from under running rings (issue 12): with both queue pairs forwarding, the
 * front-end removes the region pair 1 lives in (REM_MEM_REG), replaces the table
 * (SET_MEM_TABLE), or shrinks that region's file (a memfd without F_SEAL_SHRINK). None may
 * crash the process or touch unmapped memory; pair 1 stops with a coded error where its memory
 * is gone, and pair 0 forwards every frame, checked one by one. Pair 0 lives in region A
 * (4 MiB at GPA 0), pair 1 in region B (1 MiB at GPA 4 MiB): rings and buffers alike.
 *
 * The backend runs in this process: a SIGBUS it does not contain ends the test run.
 */
import { describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F, ProtocolFeature } from '../src/features.js';
import { encodeU64 } from '../src/vhost-user/codec.js';
import type { Session } from '../src/vhost-user/session.js';
import { type DatapathKind, native, serve, servedPerTest, waitFor } from './helpers/harness.js';
import { type GuestRam, MockFrontend } from './helpers/mock-frontend.js';
import type { RingDriver } from './helpers/ring-driver.js';

/** What each test serves, shut down after it. */
const t = servedPerTest();

const HDR = 12;
const MiB = 1 << 20;
const FEATURES = featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES);
const BUF = 2048;

interface Pair {
  /** Where the rings are, and where the buffers are. */
  ringRam: GuestRam;
  ram: GuestRam;
  receiveq: RingDriver;
  transmitq: RingDriver;
  kicks: { receiveq: number; transmitq: number };
  /** Where receive buffers and transmitted frames live, as offsets in `ram`. */
  rxBase: number;
  txBase: number;
  sent: number;
}

interface Device {
  session: Session;
  a: GuestRam;
  b: GuestRam;
  pairs: [Pair, Pair];
  broken: Map<number, string>;
}

async function ok(what: string, ack: Promise<bigint>): Promise<void> {
  const v = await ack;
  if (v !== 0n) throw new Error(`${what} refused (ack ${v})`);
}

/** `pair1Rings`: the region pair 1's rings live in (its buffers are always in B). */
async function device(kind: DatapathKind, pair1Rings: 'A' | 'B' = 'B'): Promise<Device> {
  t.srv = serve({ queuePairs: 2 }, { kind: 'loopback' }, kind);
  const next = t.srv.nextSession();
  t.fe = t.srv.connect();
  const f = t.fe;
  const session = await next;
  const broken = new Map<number, string>();
  session.onChange((c) => {
    if (c.what === 'vring broken') broken.set(Number(c.vring), String(c.error));
  });
  const hs = await f.handshake();
  expect(hs.protocolFeatures & featureMask(ProtocolFeature.CONFIGURE_MEM_SLOTS)).not.toBe(0n);
  await ok('SET_FEATURES', f.acked('SET_FEATURES', encodeU64(FEATURES)));
  const a = f.guestRam(4 * MiB, 0n, 0x7f0000000000n);
  const b = f.guestRam(MiB, BigInt(4 * MiB), 0x7f1000000000n);
  await ok('SET_MEM_TABLE', f.acked('SET_MEM_TABLE', MockFrontend.memTable([a.region, b.region]), [a.fd, b.fd]));
  const pairs: Pair[] = [];
  for (const [p, ringRam, ram, rxBase, txBase] of [
    [0, a, a, 2 * MiB, 3 * MiB],
    [1, pair1Rings === 'A' ? a : b, b, 0x80000, 0xc0000],
  ] as const) {
    const r = await f.setupVring(2 * p, ringRam);
    const t = await f.setupVring(2 * p + 1, ringRam);
    for (const index of [2 * p, 2 * p + 1])
      await ok('SET_VRING_ENABLE', f.acked('SET_VRING_ENABLE', MockFrontend.state({ index, num: 1 })));
    pairs.push({
      ringRam,
      ram,
      receiveq: f.driver(2 * p, ringRam),
      transmitq: f.driver(2 * p + 1, ringRam),
      kicks: { receiveq: r.kick, transmitq: t.kick },
      rxBase,
      txBase,
      sent: 0,
    });
  }
  // Receive buffers: 200 per pair (buffer i is head i: heads are allocated in order).
  for (const [i, p] of pairs.entries()) {
    for (let k = 0; k < 200; k++)
      p.receiveq.offer(
        p.receiveq.addChain([{ addr: p.ram.region.guestAddr + BigInt(p.rxBase + k * BUF), len: BUF, write: true }]),
      );
    p.receiveq.publish();
    native.eventfdWrite(p.kicks.receiveq, 1n);
    await waitFor(() => session.vrings[2 * i]?.started === true, 2000, `receiveq ${2 * i} started`);
  }
  return { session, a, b, pairs: pairs as [Pair, Pair], broken };
}

/** Frame `seq` of a pair: its number in the first bytes, then a pattern from it. */
function frameOf(pair: number, seq: number): Buffer {
  const f = Buffer.alloc(60 + (seq % 7) * 100, (seq * 13 + pair) & 0xff);
  f.writeUInt32BE(seq, 0);
  f.writeUInt32BE(pair, 4);
  return f;
}

/**
 * Queues `count` frames on a pair's transmitq (one descriptor each: header and frame) and kicks.
 * `write` false: the chains only (the buffers' memory is gone).
 */
function sendBurst(p: Pair, pair: number, count: number, write = true): void {
  for (let k = 0; k < count; k++) {
    const seq = p.sent++;
    const f = frameOf(pair, seq);
    const at = p.txBase + seq * BUF;
    if (write) {
      p.ram.bytes.fill(0, at, at + HDR);
      p.ram.bytes.set(f, at + HDR);
    }
    p.transmitq.offer(
      p.transmitq.addChain([{ addr: p.ram.region.guestAddr + BigInt(at), len: HDR + f.length, write: false }]),
    );
  }
  p.transmitq.publish();
  native.eventfdWrite(p.kicks.transmitq, 1n);
}

/** Every frame sent so far arrived on the pair's receiveq, in order and intact. */
async function expectAllDelivered(p: Pair, pair: number): Promise<void> {
  await waitFor(() => p.receiveq.usedIdx() === p.sent, 5000, `pair ${pair}: ${p.sent} frames delivered`);
  for (let seq = 0; seq < p.sent; seq++) {
    const u = p.receiveq.usedElem(seq);
    const f = frameOf(pair, seq);
    expect(u.len, `frame ${seq}`).toBe(HDR + f.length);
    const at = p.rxBase + u.id * BUF + HDR;
    expect(Buffer.from(p.ram.bytes.subarray(at, at + f.length)).equals(f), `frame ${seq} bytes`).toBe(true);
  }
}

describe.each(['native', 'ts'] as const)('%s data path: memory pulled from under running rings', (kind) => {
  it("REM_MEM_REG of pair 1's region: pair 1 stops (RING_ADDR_INVALID), pair 0 forwards every frame", async () => {
    const { session, b, pairs, broken } = await device(kind);
    const [p0, p1] = pairs;
    sendBurst(p0, 0, 40);
    sendBurst(p1, 1, 40);
    await expectAllDelivered(p1, 1);
    const mappings = native.mappingCount();
    sendBurst(p0, 0, 60); // in flight while the region goes
    await ok('REM_MEM_REG', (t.fe as MockFrontend).acked('REM_MEM_REG', MockFrontend.region(b.region)));
    expect(native.mappingCount()).toBe(mappings - 1); // the backend's mapping of B is gone
    expect(session.view().memory).toHaveLength(1);
    // Pair 1's rings were in B: the next kick finds them unmapped.
    native.eventfdWrite(p1.kicks.transmitq, 1n);
    native.eventfdWrite(p1.kicks.receiveq, 1n);
    await waitFor(() => broken.has(3), 5000, 'transmitq 3 broken');
    expect(broken.get(3)).toBe('RING_ADDR_INVALID');
    sendBurst(p0, 0, 60);
    await expectAllDelivered(p0, 0);
    expect(broken.has(0) || broken.has(1)).toBe(false);
  });

  it('SET_MEM_TABLE replacing the table with the same memory remapped: both pairs forward every frame', async () => {
    const { a, b, pairs, broken } = await device(kind);
    const [p0, p1] = pairs;
    sendBurst(p0, 0, 50);
    sendBurst(p1, 1, 50);
    const mappings = native.mappingCount();
    // QEMU does this on memory hot-plug: the same files again, mapped anew by the backend.
    await ok(
      'SET_MEM_TABLE',
      (t.fe as MockFrontend).acked('SET_MEM_TABLE', MockFrontend.memTable([a.region, b.region]), [a.fd, b.fd]),
    );
    expect(native.mappingCount()).toBe(mappings); // old mappings unmapped, new ones made
    sendBurst(p0, 0, 50);
    sendBurst(p1, 1, 50);
    await expectAllDelivered(p0, 0);
    await expectAllDelivered(p1, 1);
    expect([...broken.keys()]).toEqual([]);
  });

  it('SET_MEM_TABLE replacing the table without region B: pair 1 stops, pair 0 forwards every frame', async () => {
    const { a, pairs, broken } = await device(kind);
    const [p0, p1] = pairs;
    sendBurst(p0, 0, 50);
    sendBurst(p1, 1, 50);
    await ok('SET_MEM_TABLE', (t.fe as MockFrontend).acked('SET_MEM_TABLE', MockFrontend.memTable([a.region]), [a.fd]));
    native.eventfdWrite(p1.kicks.transmitq, 1n);
    await waitFor(() => broken.has(3), 5000, 'transmitq 3 broken');
    expect(broken.get(3)).toBe('RING_ADDR_INVALID');
    sendBurst(p0, 0, 50);
    await expectAllDelivered(p0, 0);
    expect(broken.has(0) || broken.has(1)).toBe(false);
  });

  it("region B's file shrunk to nothing under running rings: the SIGBUS is contained, pair 1 stops (MEMORY_FAULT), pair 0 forwards every frame", async () => {
    const { session, b, pairs, broken } = await device(kind);
    const [p0, p1] = pairs;
    expect(session.view().memory.map((r) => r.sealed)).toEqual([false, false]);
    sendBurst(p0, 0, 40);
    sendBurst(p1, 1, 40);
    await expectAllDelivered(p1, 1);
    const faults = native.memoryFaults();
    sendBurst(p0, 0, 60); // in flight while B is cut
    native.truncateFile(b.fd, 0);
    // The mock's own view of B is gone too: from here on nobody writes B. The kicks make the
    // backend read B's rings: each access past the end of the file raises SIGBUS.
    native.eventfdWrite(p1.kicks.transmitq, 1n);
    native.eventfdWrite(p1.kicks.receiveq, 1n);
    await waitFor(() => broken.has(3), 5000, 'transmitq 3 broken');
    expect(broken.get(3)).toBe('MEMORY_FAULT');
    expect(native.memoryFaults()).toBeGreaterThan(faults);
    expect(session.counters(3).ringErrors).toBe(1);
    sendBurst(p0, 0, 60);
    await expectAllDelivered(p0, 0);
    expect(broken.has(0) || broken.has(1)).toBe(false);
    // Kicking the broken queue again touches nothing and reports nothing new.
    const after = native.memoryFaults();
    native.eventfdWrite(p1.kicks.transmitq, 1n);
    await new Promise((r) => setTimeout(r, 50));
    expect(session.counters(3).ringErrors).toBe(1);
    expect(native.memoryFaults()).toBe(after);
  });

  it("region B's file shrunk under buffers in flight (rings elsewhere): the walk sees nothing wrong, the fault alone stops pair 1 (MEMORY_FAULT)", async () => {
    const { b, pairs, broken } = await device(kind, 'A');
    const [p0, p1] = pairs;
    // Every vring started first: starting one later would reconfigure the data plane, and the
    // fault must be found by the step that raised it, not by a restart.
    sendBurst(p0, 0, 20);
    sendBurst(p1, 1, 20);
    await expectAllDelivered(p0, 0);
    await expectAllDelivered(p1, 1);
    native.truncateFile(b.fd, 0);
    // Well-formed chains in A whose buffers were in B: reading the frames raises SIGBUS.
    sendBurst(p1, 1, 5, false);
    sendBurst(p0, 0, 50);
    await waitFor(() => broken.has(3), 5000, 'transmitq 3 broken');
    expect(broken.get(3)).toBe('MEMORY_FAULT');
    await expectAllDelivered(p0, 0);
    expect(broken.has(0) || broken.has(1)).toBe(false);
  });
});
