/**
 * The ring journal (src/virtio/ring-journal.ts, native/ring_journal.h): where a packed ring
 * resumes after a backend crash. Known answers for each case of decideResume, and the claim
 * the design rests on, checked store by store: a flush is cut after each of its writes (guest
 * memory and journal alike), and whatever the record then says, the ring resumes either before
 * the flush with none of its used descriptors visible, or after it with exactly the bytes the
 * whole flush writes. (That both rings write the same record is held by the differential
 * tests, test/helpers/ring-pair.ts.)
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GuestMemoryRef } from '../src/virtio/guest-memory.js';
import { DESC_F_AVAIL, DESC_F_USED, PackedRingRef } from '../src/virtio/packed-ring.js';
import {
  decideResume,
  type DescReader,
  type JournalRecord,
  type JournalRecordRef,
  journalStart,
  JOURNAL_STRIDE,
  readRecord,
  RecordState,
  RingJournal,
} from '../src/virtio/ring-journal.js';
import { DESC_F_WRITE } from '../src/virtio/ring-types.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { PackedDriver } from './helpers/packed-driver.js';

const NUM = 8;
const VA = 0x7f00_0000_0000n;
const LAYOUT = { num: NUM, descOff: 0, availOff: 0x400, usedOff: 0x800, gpaBase: 0n, vaBase: VA };
const RING = { givenBase: 0x80008000, descVa: VA, num: NUM };
const USED1 = DESC_F_AVAIL | DESC_F_USED; // used at wrap counter 1 (§2.8.1)

function record(over: Partial<JournalRecord>): JournalRecord {
  return {
    state: RecordState.Running,
    givenBase: RING.givenBase,
    descVa: VA,
    num: NUM,
    committed: 0x8003,
    pending: 0,
    pendingHead: 0,
    pendingValid: false,
    inner: [],
    commits: 3,
    ...over,
  };
}

/** Descriptors by slot: flags and length; the rest read as zero. */
function descs(m: Record<number, [number, number]>): DescReader {
  return (slot) => ({ flags: m[slot]?.[0] ?? 0, len: m[slot]?.[1] ?? 0 });
}

describe('decideResume: known answers', () => {
  it('applies only to the ring a dead backend was running, at the base it was given', () => {
    const any = descs({});
    expect(decideResume(record({ state: RecordState.HandedOver }), RING, any).kind).toBe('not-applicable');
    expect(decideResume(record({ state: RecordState.Empty }), RING, any).kind).toBe('not-applicable');
    expect(decideResume(record({ descVa: VA + 0x1000n }), RING, any)).toEqual({
      kind: 'not-applicable',
      why: 'another descriptor ring',
    });
    expect(decideResume(record({ num: 16 }), RING, any).kind).toBe('not-applicable');
    // After GET_VRING_BASE (or a migration) the front-end gives a newer base: it is believed.
    expect(decideResume(record({}), { ...RING, givenBase: 0x80038003 }, any)).toEqual({
      kind: 'not-applicable',
      why: 'the front-end gives a newer position',
    });
    expect(decideResume(record({ committed: 0x8000 | NUM }), RING, any)).toEqual({
      kind: 'not-applicable',
      why: 'bad record',
    });
  });

  it('nothing pending: the committed position', () => {
    expect(decideResume(record({}), RING, descs({}))).toEqual({ kind: 'committed', position: 0x8003 });
  });

  it('pending and committed: the commit slot shows used, or the driver made it available for the next lap', () => {
    const rec = record({ pendingValid: true, pendingHead: 0x8003, pending: 0x8005, inner: [1] });
    // Used at wrap 1: AVAIL and USED both 1.
    expect(decideResume(rec, RING, descs({ 3: [USED1 | DESC_F_WRITE, 60] }))).toEqual({
      kind: 'pending',
      position: 0x8005,
    });
    // Reclaimed by the driver and made available for wrap 0: AVAIL 0, USED 1.
    expect(decideResume(rec, RING, descs({ 3: [DESC_F_USED | DESC_F_WRITE, 60] }))).toEqual({
      kind: 'pending',
      position: 0x8005,
    });
  });

  it('pending and not committed: finishes the flush, across the end of the ring, the commit slot last', () => {
    // Commit slot 6 at wrap 1; the others at offsets 1 (slot 7) and 3 (slot 1, wrap 0); the
    // flush moves the used position to 2 at wrap 0.
    const rec = record({ pendingValid: true, pendingHead: 0x8006, pending: 0x0002, inner: [1, 3] });
    const avail1 = DESC_F_AVAIL | DESC_F_WRITE; // available at wrap 1, as the driver wrote it
    const r = decideResume(rec, RING, descs({ 6: [avail1, 100], 7: [USED1 | DESC_F_WRITE, 0], 1: [DESC_F_USED, 40] }));
    expect(r).toEqual({
      kind: 'rolled-forward',
      position: 0x0002,
      writes: [
        { slot: 1, flags: DESC_F_WRITE }, // wrap 0: AVAIL and USED 0; data written
        { slot: 7, flags: USED1 }, // no data written: no WRITE
        { slot: 6, flags: USED1 | DESC_F_WRITE },
      ],
    });
  });
});

/** A TS packed ring over plain memory, with its journal record, and a driver. */
function rig(start: number, inOrderBatch = false) {
  const mem = new Uint8Array(0x10000);
  const journal = new Uint8Array(JOURNAL_STRIDE);
  const ref: JournalRecordRef = { mappingId: -1, offset: 0, view: new DataView(journal.buffer) };
  const gm = new GuestMemoryRef([{ gpa: 0n, size: BigInt(mem.length), va: VA, bytes: mem }]);
  const driver = new PackedDriver([mem], LAYOUT, 0x1000n, 0x1000, start);
  const cfg = {
    num: NUM,
    descVa: VA,
    availVa: VA + 0x400n,
    usedVa: VA + 0x800n,
    eventIdx: false,
    indirect: false,
    notifyOnEmpty: false,
    packed: true,
    inOrderBatch,
    journal: ref,
  };
  journalStart(ref, { ...RING, givenBase: (start | (start << 16)) >>> 0 }, start);
  const ring = new PackedRingRef(gm, cfg, start, start);
  return { mem, journal, ref, driver, ring };
}

type Write = { to: 'mem' | 'journal'; bits: 16 | 32; off: number; v: number };

/** Records every store `fn` makes through the ring's descriptor view and the journal's. */
function recordWrites(ring: PackedRingRef, journal: DataView, fn: () => void): Write[] {
  const writes: Write[] = [];
  const desc = (ring as unknown as { desc: { view: DataView } }).desc.view;
  const spy = (view: DataView, to: Write['to']) => {
    const s16 = view.setUint16.bind(view);
    const s32 = view.setUint32.bind(view);
    view.setUint16 = (off, v, le) => (writes.push({ to, bits: 16, off, v }), s16(off, v, le));
    view.setUint32 = (off, v, le) => (writes.push({ to, bits: 32, off, v }), s32(off, v, le));
    return () => {
      view.setUint16 = DataView.prototype.setUint16;
      view.setUint32 = DataView.prototype.setUint32;
    };
  };
  const undo = [spy(desc, 'mem'), spy(journal, 'journal')];
  try {
    fn();
  } finally {
    for (const u of undo) u();
  }
  return writes;
}

describe.each([
  ['receiveq-like: every used descriptor written', false],
  ['transmitq-like: IN_ORDER, one used descriptor for the batch', true],
] as const)('a flush cut after any store (%s)', (_name, inOrder) => {
  it('resumes before it with nothing visible, or after it with every byte the flush writes', () => {
    // Start at slot 5 so the flush crosses the end of the ring: lists of 1, 2, 1 and 1
    // descriptors take slots 5, 6-7, 0 and 1.
    const start = 0x8005;
    const { mem, journal, ref, driver, ring } = rig(start, inOrder);
    const lists = [1, 2, 1, 1];
    lists.forEach((n, i) =>
      driver.addChain(
        Array.from({ length: n }, (_, k) => ({
          addr: BigInt(0x2000 + i * 0x100 + k * 0x40),
          len: 0x40,
          write: !inOrder,
        })),
      ),
    );
    driver.publish();
    const elems = ring.popBurst(8);
    expect(elems.map((e) => e.slots)).toEqual(lists);
    elems.forEach((e, k) => ring.fill(e.head, inOrder ? 0 : 10 + k, k, e.slots));
    const preMem = mem.slice();
    const preJournal = journal.slice();
    const writes = recordWrites(ring, ref.view, () => ring.flush(elems.length));
    const postMem = mem.slice();
    const after = ring.usedIdx;
    expect(after).toBe(0x0002); // 5 slots on from 5, past the end: slot 2 at wrap 0
    expect(writes.length).toBeGreaterThan(8);
    const flagsOf = (m: Uint8Array) => Array.from({ length: NUM }, (_, s) => m[16 * s + 14]! | (m[16 * s + 15]! << 8));
    const seen = new Set<string>();
    for (let cut = 0; cut <= writes.length; cut++) {
      const m = preMem.slice();
      const j = preJournal.slice();
      const mv = new DataView(m.buffer);
      const jv = new DataView(j.buffer);
      for (const w of writes.slice(0, cut)) {
        const v = w.to === 'mem' ? mv : jv;
        if (w.bits === 16) v.setUint16(w.off, w.v, true);
        else v.setUint32(w.off, w.v, true);
      }
      const rec = readRecord({ mappingId: -1, offset: 0, view: jv });
      const r = decideResume(rec, { ...RING, givenBase: (start | (start << 16)) >>> 0 }, (slot) => ({
        flags: mv.getUint16(16 * slot + 14, true),
        len: mv.getUint32(16 * slot + 8, true),
      }));
      if (r.kind === 'rolled-forward') for (const w of r.writes) mv.setUint16(16 * w.slot + 14, w.flags, true);
      seen.add(r.kind);
      const where = `cut after ${cut} of ${writes.length} stores (${r.kind})`;
      expect(r.kind, where).not.toBe('not-applicable');
      const position = r.kind === 'not-applicable' ? -1 : r.position;
      if (position === start) {
        expect(r.kind, where).toBe('committed');
        // The driver sees none of the flush: every descriptor's flags are as before.
        expect(flagsOf(m), where).toEqual(flagsOf(preMem));
      } else {
        expect(position, where).toBe(after);
        expect(Buffer.from(m.subarray(0, 16 * NUM)).equals(Buffer.from(postMem.subarray(0, 16 * NUM))), where).toBe(
          true,
        );
      }
    }
    // Every case was met on the way.
    expect([...seen].sort()).toEqual(['committed', 'pending', 'rolled-forward']);
  });
});

describe('the journal file', () => {
  it('is made, reused by the same layout, started over for another, and refused while another process holds it', () => {
    const tmp = tempDir();
    try {
      const path = join(tmp.dir, 'vhost.sock.rings');
      const alive = (pid: number) => pid === 1; // PID 1 always runs
      const a = RingJournal.open(native, path, 4, alive);
      expect(a.opened).toBe('new');
      expect(statSync(path).mode & 0o777).toBe(0o600);
      a.markRunning(3, RING, 0x8005);
      a.close();
      const b = RingJournal.open(native, path, 4, alive);
      expect(b.opened).toBe('reused');
      expect(b.read(3)).toMatchObject({ state: RecordState.Running, committed: 0x8005, num: NUM });
      b.close();
      const c = RingJournal.open(native, path, 2, alive);
      expect(c.opened).toBe('reset');
      expect(c.read(1).state).toBe(RecordState.Empty);
      c.close();
      // A record naming a process that still runs (here PID 1) is another backend's.
      const fd = openSync(path, 'r+');
      const pid = Buffer.alloc(4);
      pid.writeUInt32LE(1);
      writeSync(fd, pid, 0, 4, 20);
      closeSync(fd);
      expect(() => RingJournal.open(native, path, 2, alive)).toThrow(/in use by process 1/);
    } finally {
      tmp.cleanup();
    }
  });

  it('--ring-state FILE that cannot be opened stops start-up (VUN_HOST_RING_STATE); the default is dropped with a warning', async () => {
    const tmp = tempDir();
    const bin = join(import.meta.dirname, '..', 'bin', 'vhost-user-net.js');
    const sock = join(tmp.dir, 'vhost.sock');
    const p = { child: undefined as ReturnType<typeof spawn> | undefined };
    try {
      const bad = spawnSync(
        process.execPath,
        [bin, '--socket', sock, '--ring-state', join(tmp.dir, 'no', 'such', 'dir', 'x.rings')],
        { encoding: 'utf8', timeout: 20_000 },
      );
      expect(bad.status).toBe(1);
      expect(bad.stdout + bad.stderr).toMatch(/VUN_HOST_RING_STATE/);
      // The default beside the socket: a directory where the file would go makes it fail.
      mkdirSync(`${sock}.rings`);
      const child = spawn(process.execPath, [bin, '--socket', sock]);
      p.child = child;
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      await waitFor(() => out.includes('"msg":"listening"'), 15_000, 'listening');
      expect(out).toMatch(/no ring journal: packed rings will not resume/);
    } finally {
      p.child?.kill('SIGKILL');
      tmp.cleanup();
    }
  });
});
