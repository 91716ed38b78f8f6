/**
 * Two rings of one layout (split or packed) over identical guest memory: the TS reference
 * (SplitRingRef or PackedRingRef) and the C++ ring (RingModel), each over its own copy of the
 * same bytes. `runSequence` applies one list
 * of driver and device operations to both, checks after every step that results, ring state,
 * trace and every byte of memory agree, and returns what happened, so a test can also hold
 * the outcome to a known answer (agreement alone cannot catch a misreading both share).
 */
import { expect } from 'vitest';
import { DirtyLog } from '../../src/virtio/dirty-log.js';
import { GuestMemoryRef } from '../../src/virtio/guest-memory.js';
import { SplitRingRef } from '../../src/virtio/split-ring.js';
import { PackedRingRef } from '../../src/virtio/packed-ring.js';
import { JOURNAL_STRIDE, type JournalRecord, readRecord } from '../../src/virtio/ring-journal.js';
import type { Element, RingState, Vring } from '../../src/virtio/ring-types.js';
import { PackedDriver } from './packed-driver.js';
import { records } from '../../src/trace/observe.js';
import type { RingEvent } from '../../src/virtio/ring-events.js';
import { native } from './harness.js';
import { RingDriver, type DescSpec } from './ring-driver.js';
import { ringErrorNames } from '../../src/virtio/ring-errors.js';

export const REGION = 32 * 1024;
export const GPA_A = 0n;
export const GPA_B = BigInt(REGION); // contiguous with A: buffers may cross the edge at 32 KiB
export const VA_A = 0x7f00_0000_0000n;
export const VA_B = VA_A + BigInt(REGION);
export const HOLE = 0x10_0000n; // not guest memory
export const NUM = 16;
export const LAYOUT = { num: NUM, descOff: 0, availOff: 0x400, usedOff: 0x800, gpaBase: GPA_A, vaBase: VA_A };
export const INDIRECT_OFF = 0x1000;
export const DATA_LO = 0x2000n;
export const DATA_HI = 2n * BigInt(REGION);

export interface Side {
  fd: number;
  maps: number[];
  bytes: Uint8Array[];
  /** The dirty log: a memfd of LOG_BYTES. */
  logFd: number;
  logMap: number;
  log: Uint8Array;
  /** Packed rings' journal record (src/virtio/ring-journal.ts): a memfd of one record. */
  journalFd: number;
  journalMap: number;
  journal: Uint8Array;
}
/** The dirty log covers 2 MiB of guest addresses; used ring writes are logged at LOG_USED_AT. */
export const LOG_BYTES = 64;
export const LOG_USED_AT = 0x10_0000n;
let sides: Side[] = [];

function makeSide(): Side {
  const fd = native.memfdCreate('diff', 2 * REGION);
  const maps = [native.mmapFd(fd, REGION, 0), native.mmapFd(fd, REGION, REGION)];
  const logFd = native.memfdCreate('diff-log', LOG_BYTES);
  const logMap = native.mmapFd(logFd, LOG_BYTES, 0);
  const journalFd = native.memfdCreate('diff-journal', JOURNAL_STRIDE);
  const journalMap = native.mmapFd(journalFd, JOURNAL_STRIDE, 0);
  return {
    fd,
    maps,
    bytes: maps.map((m) => new Uint8Array(native.mappingBuffer(m))),
    logFd,
    logMap,
    log: new Uint8Array(native.mappingBuffer(logMap)),
    journalFd,
    journalMap,
    journal: new Uint8Array(native.mappingBuffer(journalMap)),
  };
}

/** Maps the two memories (call from beforeAll). */
export function openSides(): void {
  sides = [makeSide(), makeSide()];
}
/** Unmaps them (call from afterAll). */
export function closeSides(): void {
  for (const s of sides) {
    for (const m of s.maps) native.munmap(m);
    native.close(s.fd);
    native.munmap(s.logMap);
    native.close(s.logFd);
    native.munmap(s.journalMap);
    native.close(s.journalFd);
  }
  sides = [];
}

export type Op =
  | { op: 'chain'; descs: DescSpec[] }
  /** `tableExtraFlags` (packed): flags besides WRITE in the table's descriptors. */
  | { op: 'indirect'; descs: DescSpec[]; tableLen?: number; extraFlags?: number; tableExtraFlags?: number }
  /**
   * One raw descriptor. Split: `next` as given. Packed: `next` is the buffer id; `wrongWrap`
   * gives it the AVAIL/USED bits of the other lap; `later` writes it as a later descriptor of a
   * chain (visible at once) rather than a first one (visible at publish).
   */
  | { op: 'raw'; addr: bigint; len: number; flags: number; next: number; wrongWrap?: boolean; later?: boolean }
  | { op: 'publish'; jump?: number }
  /** Puts any head (in range or not) into the next avail slot. */
  | { op: 'offer'; head: number }
  | { op: 'pop'; max: number }
  | { op: 'complete'; count: number; lens: number[] }
  | { op: 'rewind' }
  | { op: 'usedEvent'; v: number }
  | { op: 'availFlags'; v: number }
  | { op: 'notifyEnable'; on: boolean };

export interface Features {
  eventIdx: boolean;
  indirect: boolean;
  notifyOnEmpty: boolean;
  /** The packed layout (start positions then are position | wrap << 15). */
  packed?: boolean;
  /** VIRTIO_F_IN_ORDER batching: one used element per flush (the driver reads it in order). */
  inOrderBatch?: boolean;
}

const strip = (elems: Element[]) =>
  elems.map((e) => ({
    head: e.head,
    slots: e.slots,
    out: e.out.map((s) => [s.gpa, s.len]),
    in: e.in.map((s) => [s.gpa, s.len]),
    outLen: e.outLen,
    inLen: e.inLen,
  }));

/** What a sequence did, as both rings agreed it. */
export interface Outcome {
  /** Heads popped, pop by pop. */
  popped: number[][];
  /** The notification decision after each `complete`. */
  notify: boolean[];
  /** Used elements published, in order. */
  used: { id: number; len: number }[];
  /** Ring state at the end. */
  state: RingState;
  /** The error's name when the ring broke. */
  error?: string;
  /** The dirty log at the end (both rings agreed on it). */
  log?: Buffer;
  /** Packed: the flags of each used descriptor published, in order. */
  usedFlags?: number[];
  /** Packed: the ring journal's record at the end (both rings wrote the same bytes). */
  journal?: JournalRecord;
  /** Packed: the device event suppression structure at the end. */
  deviceEvent?: { offWrap: number; flags: number };
  /** Split: avail_event (the u16 after the used ring) at the end. */
  availEvent?: number;
}

/** Runs one sequence; throws on the first difference; returns what happened. */
export function runSequence(
  ops: Op[],
  feat: Features,
  startIdx: number,
  trace = false,
  opts: {
    /** Moves the descriptor table by this many bytes (a misplaced ring). */
    descShift?: number;
    /** Moves the avail ring (packed: the driver area) by this many bytes. */
    availShift?: number;
    /**
     * Declares region B this large (only its first 32 KiB are mapped): for chains whose
     * lengths add up past 4 GiB. Safe only for sequences that pop and complete nothing with
     * data: a pop computes addresses and reads no buffer byte.
     */
    regionBSize?: bigint;
    /** Dirty log off (default on: used ring writes logged at LOG_USED_AT). */
    noLog?: boolean;
  } = {},
): Outcome {
  const logged = !opts.noLog;
  const descShift = opts.descShift ?? 0;
  const sizeB = opts.regionBSize ?? BigInt(REGION);
  const outcome: Outcome = { popped: [], notify: [], used: [], state: undefined as never };
  for (const s of sides) for (const b of [...s.bytes, s.log, s.journal]) b.fill(0);
  const mems = sides.flatMap((s) => [s.bytes[0] as Uint8Array]);
  const packed = feat.packed === true;
  const split = packed ? undefined : new RingDriver(mems, LAYOUT, GPA_A + BigInt(INDIRECT_OFF), INDIRECT_OFF);
  const pd = packed
    ? new PackedDriver(mems, LAYOUT, GPA_A + BigInt(INDIRECT_OFF), INDIRECT_OFF, startIdx, feat.inOrderBatch)
    : undefined;
  const driver = (split ?? pd) as RingDriver | PackedDriver;
  if (split) {
    split.availIdx = startIdx;
    split.publish();
  }
  const cfg = {
    num: NUM,
    descVa: driver.descVa + BigInt(descShift),
    availVa: driver.availVa + BigInt(opts.availShift ?? 0),
    usedVa: driver.usedVa,
    ...feat,
    ...(logged ? { logGuestAddr: LOG_USED_AT } : {}),
  };
  const s0 = sides[0] as Side;
  const s1 = sides[1] as Side;
  const refMem = new GuestMemoryRef([
    { gpa: GPA_A, size: BigInt(REGION), va: VA_A, bytes: s0.bytes[0] as Uint8Array },
    { gpa: GPA_B, size: sizeB, va: VA_B, bytes: s0.bytes[1] as Uint8Array },
  ]);
  // Packed rings write a ring journal record at each flush (--ring-state), on both sides.
  const journalOf = (side: Side) => ({
    mappingId: side.journalMap,
    offset: 0,
    view: new DataView(side.journal.buffer, side.journal.byteOffset, side.journal.byteLength),
  });
  const ref: Vring = packed
    ? new PackedRingRef(refMem, { ...cfg, journal: journalOf(s0) }, startIdx, startIdx)
    : new SplitRingRef(refMem, cfg, startIdx, startIdx);
  if (logged) ref.setLog(new DirtyLog(s0.log));
  const fast = new native.RingModel(
    [
      { mappingId: s1.maps[0] as number, gpa: GPA_A, size: BigInt(REGION), va: VA_A },
      { mappingId: s1.maps[1] as number, gpa: GPA_B, size: sizeB, va: VA_B },
    ],
    {
      num: NUM,
      desc: cfg.descVa,
      avail: cfg.availVa,
      used: cfg.usedVa,
      ...feat,
      lastAvailIdx: startIdx,
      usedIdx: startIdx,
      trace,
      ...(logged ? { log: { mappingId: s1.logMap, logGuestAddr: LOG_USED_AT } } : {}),
      ...(packed ? { journal: { mappingId: s1.journalMap, offset: 0 } } : {}),
    },
  );
  // With `trace`, both rings also report every step; the C++ records must decode to the same
  // events the reference emits (the ring trace reads the same on either data path).
  const refEvents: RingEvent[] = [];
  if (trace) ref.setTrace((e) => refEvents.push(structuredClone(e)));
  const outstanding: Element[] = [];
  let poppedNotFilled = 0;
  ops.forEach((o, step) => {
    const where = `step ${step} ${JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`;
    switch (o.op) {
      case 'chain':
        if (split) split.offer(split.addChain(o.descs));
        else pd?.addChain(o.descs);
        break;
      case 'indirect':
        if (split) split.offer(split.addIndirect(o.descs, { tableLen: o.tableLen, extraFlags: o.extraFlags }));
        else
          pd?.addIndirect(o.descs, {
            tableLen: o.tableLen,
            extraFlags: o.extraFlags,
            tableExtraFlags: o.tableExtraFlags,
          });
        break;
      case 'raw': {
        if (split) {
          const [i] = split.allocDescs(1);
          split.rawDesc(i as number, o.addr, o.len, o.flags, o.next);
          split.offer(i as number);
        } else pd?.raw(o.addr, o.len, o.flags, o.next, { wrongWrap: o.wrongWrap, first: !o.later });
        break;
      }
      case 'offer':
        split?.offer(o.head);
        break;
      case 'publish':
        if (split) split.publish(o.jump !== undefined ? (split.availIdx + o.jump) & 0xffff : split.availIdx);
        else pd?.publish();
        break;
      case 'pop': {
        const a = ref.popBurst(o.max);
        const b = fast.popBurst(o.max);
        expect(b, where).toEqual(strip(a));
        outcome.popped.push(a.map((e) => e.head));
        outstanding.push(...a);
        poppedNotFilled = a.length;
        break;
      }
      case 'complete': {
        const n = Math.min(o.count, outstanding.length);
        const done = outstanding.splice(0, n);
        done.forEach((e, k) => {
          const len = Math.min(o.lens[k] ?? 0, e.inLen);
          ref.fill(e.head, len, k, e.slots);
          fast.fill(e.head, len, k, e.slots);
        });
        const before = split?.usedIdx() ?? 0;
        ref.flush(n);
        fast.flush(n);
        // IN_ORDER batching: one element, in the batch's first slot, for the whole batch.
        if (split)
          for (let k = 0; k < (feat.inOrderBatch ? Math.min(n, 1) : n); k++)
            outcome.used.push(split.usedElem(before + k));
        else
          for (const u of (pd as PackedDriver).takeUsed()) {
            outcome.used.push({ id: u.id, len: u.len });
            (outcome.usedFlags ??= []).push(u.flags);
          }
        const notify = ref.needNotify();
        expect(fast.needNotify(), where).toBe(notify);
        outcome.notify.push(notify);
        poppedNotFilled = 0;
        if (packed) {
          // Both rings journal the flush alike, and what the journal commits is where the
          // driver now finds the used position.
          expect(Buffer.from(s1.journal).equals(Buffer.from(s0.journal)), `${where}: ring journal`).toBe(true);
          const j = readRecord(journalOf(s0));
          if (n > 0) expect(j.committed, `${where}: journal committed`).toBe(ref.state().usedIdx);
          expect(j.pendingValid, `${where}: journal pending`).toBe(false);
        }
        // The C++ ring ORs a burst's marks into the log at flush: from then on both logs agree.
        expect(Buffer.from(s1.log).equals(Buffer.from(s0.log)), `${where}: dirty log`).toBe(true);
        break;
      }
      case 'rewind':
        // Only chains popped by the last pop and not filled may be given back.
        if (poppedNotFilled > 0 && outstanding.length >= poppedNotFilled) {
          outstanding.splice(outstanding.length - poppedNotFilled);
          ref.rewind(poppedNotFilled);
          fast.rewind(poppedNotFilled);
          poppedNotFilled = 0;
        }
        break;
      case 'usedEvent':
        driver.setUsedEvent(o.v);
        break;
      case 'availFlags':
        driver.setAvailFlags(o.v);
        break;
      case 'notifyEnable':
        if (!ref.broken) {
          ref.setNotification(o.on);
          fast.setNotification(o.on);
        }
        break;
    }
    expect(fast.state(), where).toEqual(ref.state());
    if (trace) {
      const got = [...records(fast.drainTrace())].map((r) => (r.kind === 'ring' ? r.event : r));
      expect(got, `${where}: ring trace`).toEqual(refEvents.splice(0));
    }
    for (let r = 0; r < 2; r++) {
      const x = s0.bytes[r] as Uint8Array;
      const y = s1.bytes[r] as Uint8Array;
      if (Buffer.compare(x, y) !== 0) {
        const at = x.findIndex((v, i) => v !== y[i]);
        throw new Error(`${where}: guest memory differs in region ${r} at offset 0x${at.toString(16)}`);
      }
    }
  });
  // A stop syncs what the C++ ring still caches (avail_event writes of later pops).
  fast.syncLog();
  if (!Buffer.from(s1.log).equals(Buffer.from(s0.log))) {
    throw new Error(
      `end of sequence: dirty log differs: ref ${Buffer.from(s0.log).toString('hex')} C++ ${Buffer.from(s1.log).toString('hex')}`,
    );
  }
  outcome.log = Buffer.from(s0.log);
  outcome.state = ref.state();
  if (pd) outcome.deviceEvent = pd.deviceEvent();
  if (pd) outcome.journal = readRecord(journalOf(s0));
  if (split) outcome.availEvent = split.availEvent();
  if (ref.broken) outcome.error = ringErrorNames[ref.error];
  return outcome;
}
