/**
 * The control plane as a state machine under fuzzing: random sequences of vhost-user messages
 * (well formed, mutated, and in any order) go through the real transport (a unix socket, fds
 * by SCM_RIGHTS), codec, handler table, session and data plane of a running backend. After
 * every message:
 *  - nothing escaped as an internal error: a connection the backend closed was closed for a
 *    coded reason (a VunError), never for a TypeError or the like;
 *  - every reply is a well-formed message (version 1, REPLY, its size);
 *  - the mappings alive are the session's regions and dirty log, no more;
 * and after the front-end hangs up: every fd the backend received is closed, every mapping
 * released.
 *
 * Why fast-check and not a coverage-guided fuzzer: Jazzer.js, the coverage-guided fuzzer for
 * Node, installs its native part by downloading prebuilt binaries, which this project does not
 * do. fast-check runs in-process, shrinks a failing sequence to a short one, and replays it from
 * its seed; the message generators below reach the deep states on purpose (valid set-up steps
 * are most of each sequence). VUN_CONTROL_FUZZ_RUNS sets the number of sequences (default
 * 3000; docs/reliability.md has the 1,000,000-sequence run).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { featureMask, ProtocolFeature } from '../src/features.js';
import {
  decodeHeader,
  encodeLogDescription,
  encodeMemTable,
  encodeMessage,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  Flags,
  HEADER_SIZE,
  MAX_PAYLOAD,
  Request,
  type RequestName,
} from '../src/vhost-user/codec.js';
import { OFFERED_PROTOCOL_FEATURES, offeredFeatures } from '../src/vhost-user/session.js';
import { connectNow, native, type Served, serve } from './helpers/harness.js';

const RUNS = Number(process.env.VUN_CONTROL_FUZZ_RUNS ?? 3000);
const BATCH = 2000;
const QUEUE_PAIRS = 2;
const REGION = 64 * 1024;
const UADDR = 0x7f0000000000n;

/** An fd the front-end sends: made when the message is sent, handed over, closed on our side. */
type FdKind = 'memfd' | 'small-memfd' | 'eventfd';

interface Step {
  request: number;
  flags: number;
  payload: Buffer;
  fds: FdKind[];
  /** Mutations: the header's size field off by this much (the stream then desynchronizes). */
  sizeDelta: number;
}

// --- generators ---------------------------------------------------------------------------

const vringIndex = fc.oneof(
  { weight: 20, arbitrary: fc.integer({ min: 0, max: QUEUE_PAIRS * 2 - 1 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);
const ringNum = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(64, 256, 1024) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 100, 32768, 65535) },
);
const gpa = fc.constantFrom(0n, BigInt(REGION), BigInt(2 * REGION), 0x100000n);
const region = fc.record({
  guestAddr: gpa,
  size: fc.constantFrom(BigInt(REGION), BigInt(REGION / 2), 0n, BigInt(REGION * 2), 1n << 63n),
  userAddr: fc.constantFrom(UADDR, UADDR + BigInt(REGION), UADDR + 0x100000n, 0n),
  mmapOffset: fc.constantFrom(0n, 0n, 4096n, BigInt(REGION)),
});
/** A ring area inside the first region (mostly), aligned (mostly). */
const ringAddr = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 15 }).map((k) => UADDR + BigInt(k * 4096)) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: REGION }).map((k) => UADDR + BigInt(k)) },
);
/** Mostly a subset of what the backend offers (as a driver acks), sometimes anything. */
const OFFERED = offeredFeatures(QUEUE_PAIRS);
const features = fc.oneof(
  { weight: 8, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((m) => m & OFFERED) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
);
const u64 = (v: fc.Arbitrary<bigint>) => v.map(encodeU64);
const none = fc.constant(Buffer.alloc(0));
const state = fc.record({ index: vringIndex, num: ringNum }).map(encodeVringState);

/** Each request with a payload of its own shape and the fds it normally carries. */
const valid: Record<string, fc.Arbitrary<{ payload: Buffer; fds: FdKind[] }>> = {
  GET_FEATURES: none.map((payload) => ({ payload, fds: [] })),
  SET_FEATURES: u64(features).map((payload) => ({ payload, fds: [] })),
  GET_PROTOCOL_FEATURES: none.map((payload) => ({ payload, fds: [] })),
  SET_PROTOCOL_FEATURES: u64(
    fc.oneof(
      { weight: 8, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((m) => m & OFFERED_PROTOCOL_FEATURES) },
      { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 20n) - 1n }) },
    ),
  ).map((payload) => ({ payload, fds: [] })),
  SET_OWNER: none.map((payload) => ({ payload, fds: [] })),
  RESET_OWNER: none.map((payload) => ({ payload, fds: [] })),
  RESET_DEVICE: none.map((payload) => ({ payload, fds: [] })),
  GET_QUEUE_NUM: none.map((payload) => ({ payload, fds: [] })),
  GET_MAX_MEM_SLOTS: none.map((payload) => ({ payload, fds: [] })),
  SET_MEM_TABLE: fc
    .array(region, { minLength: 0, maxLength: 3 })
    .map((rs) => ({ payload: encodeMemTable(rs), fds: rs.map(() => 'memfd' as FdKind) })),
  ADD_MEM_REG: region.map((r) => ({ payload: encodeSingleRegion(r), fds: ['memfd' as FdKind] })),
  REM_MEM_REG: region.map((r) => ({ payload: encodeSingleRegion(r), fds: [] })),
  SET_VRING_NUM: state.map((payload) => ({ payload, fds: [] })),
  SET_VRING_BASE: state.map((payload) => ({ payload, fds: [] })),
  GET_VRING_BASE: state.map((payload) => ({ payload, fds: [] })),
  SET_VRING_ENABLE: fc
    .record({ index: vringIndex, num: fc.constantFrom(0, 1, 2) })
    .map((s) => ({ payload: encodeVringState(s), fds: [] })),
  SET_VRING_ADDR: fc
    .record({
      index: vringIndex,
      flags: fc.constantFrom(0, 1),
      descUserAddr: ringAddr,
      availUserAddr: ringAddr,
      usedUserAddr: ringAddr,
      logGuestAddr: fc.constantFrom(0n, 0x8000n),
    })
    .map((a) => ({ payload: encodeVringAddr(a), fds: [] })),
  SET_VRING_KICK: fc.record({ index: vringIndex, nofd: fc.boolean() }).map(({ index, nofd }) => ({
    payload: encodeU64(BigInt(index & 0xff) | (nofd ? 0x100n : 0n)),
    fds: nofd ? [] : ['eventfd' as FdKind],
  })),
  SET_VRING_CALL: fc.record({ index: vringIndex, nofd: fc.boolean() }).map(({ index, nofd }) => ({
    payload: encodeU64(BigInt(index & 0xff) | (nofd ? 0x100n : 0n)),
    fds: nofd ? [] : ['eventfd' as FdKind],
  })),
  SET_VRING_ERR: fc.record({ index: vringIndex, nofd: fc.boolean() }).map(({ index, nofd }) => ({
    payload: encodeU64(BigInt(index & 0xff) | (nofd ? 0x100n : 0n)),
    fds: nofd ? [] : ['eventfd' as FdKind],
  })),
  SET_LOG_BASE: fc
    .record({ mmapSize: fc.constantFrom(4096n, 0n, 1n << 40n), mmapOffset: fc.constantFrom(0n, 4096n) })
    .map((l) => ({ payload: encodeLogDescription(l), fds: ['small-memfd' as FdKind] })),
  SET_LOG_FD: none.map((payload) => ({ payload, fds: ['eventfd' as FdKind] })),
  SEND_RARP: u64(fc.bigInt({ min: 0n, max: (1n << 48n) - 1n })).map((payload) => ({ payload, fds: [] })),
  NET_SET_MTU: u64(fc.constantFrom(68n, 1500n, 9000n, 65535n, 0n, 1n << 40n)).map((payload) => ({
    payload,
    fds: [],
  })),
  SET_STATUS: u64(fc.constantFrom(0n, 1n, 3n, 7n, 15n, 0xffn)).map((payload) => ({ payload, fds: [] })),
  GET_STATUS: none.map((payload) => ({ payload, fds: [] })),
};
const validNames = Object.keys(valid) as RequestName[];

const validStep: fc.Arbitrary<Step> = fc.constantFrom(...validNames).chain((name) =>
  fc
    .record({ body: valid[name] as fc.Arbitrary<{ payload: Buffer; fds: FdKind[] }>, needReply: fc.boolean() })
    .map(({ body, needReply }) => ({
      request: Request[name],
      flags: Flags.VERSION | (needReply ? Flags.NEED_REPLY : 0),
      payload: body.payload,
      fds: body.fds,
      sizeDelta: 0,
    })),
);

/** A valid step changed: another request number, flags, bytes, fds, or a size that lies. */
const mutatedStep: fc.Arbitrary<Step> = fc
  .record({
    base: validStep,
    mutation: fc.constantFrom('request', 'flags', 'byte', 'truncate', 'extend', 'fds', 'size'),
    value: fc.nat(),
    byte: fc.integer({ min: 0, max: 255 }),
  })
  .map(({ base, mutation, value, byte }) => {
    const s = { ...base, payload: Buffer.from(base.payload), fds: [...base.fds] };
    switch (mutation) {
      case 'request':
        s.request = value % 50;
        break;
      case 'flags':
        s.flags = value & 0xff;
        break;
      case 'byte':
        if (s.payload.length) s.payload[value % s.payload.length] = byte;
        break;
      case 'truncate':
        s.payload = s.payload.subarray(0, s.payload.length ? value % s.payload.length : 0);
        break;
      case 'extend':
        s.payload = Buffer.concat([s.payload, Buffer.alloc((value % 64) + 1, byte)]);
        break;
      case 'fds':
        s.fds = Array.from({ length: value % 4 }, (_, i): FdKind => (i % 2 ? 'memfd' : 'eventfd'));
        break;
      case 'size':
        s.sizeDelta = (value % 17) - 8 || 1;
        break;
    }
    return s;
  });

/** A sequence: QEMU's usual start most of the time, then anything, in any order. */
const prefix: Step[] = (
  [
    ['GET_FEATURES', Buffer.alloc(0)],
    ['GET_PROTOCOL_FEATURES', Buffer.alloc(0)],
    ['SET_PROTOCOL_FEATURES', encodeU64(featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIGURE_MEM_SLOTS))],
    ['SET_OWNER', Buffer.alloc(0)],
  ] as const
).map(([name, payload]) => ({ request: Request[name], flags: Flags.VERSION, payload, fds: [], sizeDelta: 0 }));
/** Valid steps only (deep states), or with mutated ones among them (a mutation mostly ends it). */
const steps = fc.oneof(
  fc.array(validStep, { maxLength: 32, size: 'max' }),
  fc.array(fc.oneof({ weight: 6, arbitrary: validStep }, { weight: 1, arbitrary: mutatedStep }), {
    maxLength: 32,
    size: 'max',
  }),
);
const sequence = fc
  .record({ qemuStart: fc.boolean(), steps })
  .map(({ qemuStart, steps }) => (qemuStart ? [...prefix, ...steps] : steps));

// --- the harness --------------------------------------------------------------------------

let srv: Served;
beforeAll(() => {
  srv = serve({ queuePairs: QUEUE_PAIRS }, { kind: 'null' }, 'native');
});
afterAll(() => srv.stop());

function makeFd(kind: FdKind): number {
  if (kind === 'eventfd') return native.eventfdCreate(0);
  return native.memfdCreate('fuzz-ram', kind === 'memfd' ? REGION : 4096);
}

/** Reads whatever the backend sent and checks each message is a well-formed reply. */
function drainReplies(fd: number, inbox: { buf: Buffer }): void {
  const chunk = Buffer.alloc(4096);
  for (;;) {
    let r;
    try {
      r = native.recvMsg(fd, chunk, 0, chunk.length, 8);
    } catch {
      break; // ECONNRESET: the backend closed with our bytes unread
    }
    for (const f of r.fds) native.close(f);
    if (r.bytes <= 0) break;
    inbox.buf = Buffer.concat([inbox.buf, chunk.subarray(0, r.bytes)]);
  }
  while (inbox.buf.length >= HEADER_SIZE) {
    const h = decodeHeader(inbox.buf);
    if ((h.flags & Flags.VERSION_MASK) !== Flags.VERSION || !(h.flags & Flags.REPLY) || h.size > MAX_PAYLOAD)
      throw new Error(`malformed reply: ${JSON.stringify(h)}`);
    if (inbox.buf.length < HEADER_SIZE + h.size) break;
    inbox.buf = inbox.buf.subarray(HEADER_SIZE + h.size);
  }
}

const stats = { sequences: 0, messages: 0, closedByBackend: 0, reasons: new Map<string, number>(), started: 0 };

function runSequence(steps: Step[]): void {
  const fds0 = native.ownedFds();
  const maps0 = native.mappingCount();
  const { fd, conn, session, read } = connectNow(srv);
  let reason: unknown;
  srv.backend.once('sessionClosed', (_s: unknown, r: unknown) => {
    reason = r;
  });
  const inbox = { buf: Buffer.alloc(0) };
  stats.sequences++;
  try {
    for (const s of steps) {
      const bytes = encodeMessage(s.request, s.flags, s.payload);
      if (s.sizeDelta) bytes.writeUInt32LE(Math.max(0, s.payload.length + s.sizeDelta), 8);
      const fds = s.fds.map(makeFd);
      try {
        native.sendMsg(fd, bytes, fds);
      } catch {
        /* the backend closed its end: the send fails, as it would for QEMU */
      } finally {
        for (const f of fds) native.close(f);
      }
      stats.messages++;
      read();
      drainReplies(fd, inbox);
      if (conn.isClosed) break;
      const view = session.view();
      const live = view.memory.length + (view.dirtyLog ? 1 : 0);
      if (native.mappingCount() - maps0 !== live)
        throw new Error(`mappings: ${native.mappingCount() - maps0} alive, the session holds ${live}`);
      if (view.vrings.some((v) => v.started)) stats.started++;
    }
  } finally {
    native.close(fd);
    if (!conn.isClosed) read(); // sees the hang-up and closes the session
  }
  if (!conn.isClosed) throw new Error('the backend did not close on hang-up');
  if (reason !== undefined) {
    stats.closedByBackend++;
    const code = (reason as { code?: unknown }).code;
    if (typeof code !== 'string' || !code.startsWith('VUN_'))
      throw new Error(`closed for an uncoded reason: ${String(reason)}`);
    stats.reasons.set(code, (stats.reasons.get(code) ?? 0) + 1);
  }
  if (native.ownedFds() !== fds0) throw new Error(`fds: ${native.ownedFds() - fds0} left open after the session`);
  if (native.mappingCount() !== maps0)
    throw new Error(`mappings: ${native.mappingCount() - maps0} left after the session`);
}

describe('control plane state-machine fuzzing (fast-check)', () => {
  it(
    `${RUNS} message sequences through transport, codec, handler table and session keep every invariant`,
    async () => {
      const seed = Number(process.env.VUN_CONTROL_FUZZ_SEED ?? Date.now() % 2 ** 31);
      for (let done = 0, batch = 0; done < RUNS; done += BATCH, batch++) {
        fc.assert(
          fc.property(sequence, (steps) => runSequence(steps)),
          {
            numRuns: Math.min(BATCH, RUNS - done),
            seed: seed + batch,
          },
        );
        // Let the event loop breathe between batches (the backend's pollers, vitest's heartbeat).
        await new Promise((r) => setImmediate(r));
      }
      const summary = {
        seed,
        ...stats,
        reasons: Object.fromEntries([...stats.reasons].sort((a, b) => b[1] - a[1])),
      };
      console.log(`control fuzz: ${JSON.stringify(summary)}`);
      // The generators reach the deep states: sessions with running vrings, and closes for cause.
      expect(stats.sequences).toBe(RUNS);
      expect(stats.started).toBeGreaterThan(0);
      expect(stats.closedByBackend).toBeGreaterThan(0);
    },
    RUNS * 50 + 60_000,
  );
});
