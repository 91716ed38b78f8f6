/**
 * The ring journal (`--ring-state FILE`): where each packed ring is, kept in a file the
 * backend maps shared, so a backend restarted after a crash resumes its packed rings where the
 * dead one stopped. A split ring needs none: used->idx lives in guest memory and QEMU resends it.
 * A packed ring keeps no used index in guest memory (virtio 1.2 §2.8), and QEMU's net device
 * does not ask for inflight tracking: after a crash it sends again the SET_VRING_BASE it gave
 * the dead backend, a position the driver left long ago.
 *
 * Each flush writes its record in three steps around the store that commits it (the flags of
 * its first used descriptor, written last): `journalBegin` before it (the position the flush
 * moves to, the commit slot, and where the flush's other used descriptors lie), `journalCommit`
 * after it. native/ring_journal.h does the same writes in the C++ path and gives the argument
 * that a crash at any instruction leaves a record `decideResume` can act on.
 *
 * When a ring starts, the record applies only if the dead backend was running this very ring:
 * state "running" (nobody answered GET_VRING_BASE since), the same descriptor ring address and
 * size, and SET_VRING_BASE equal to what the front-end gave the dead one (a front-end that never
 * learned a newer position sends the old one again; one that did, after GET_VRING_BASE or a
 * migration, is believed).
 *
 * File: a 4 KiB header (magic, version, vrings, stride, pid), then one record of `STRIDE` bytes
 * per vring (layout in native/ring_journal.h).
 */
import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';

export const JOURNAL_MAGIC = 'VUNRINGS';
export const JOURNAL_VERSION = 1;
export const JOURNAL_HEADER_BYTES = 4096;
/** Bytes per vring: 64 of fields, then up to 32767 u16 offsets, rounded to pages. */
export const JOURNAL_STRIDE = 69632;

/** §2.8.1, §2.7.5 (packed-ring.ts and ring-types.ts have the same; this module sits below them). */
const DESC_F_WRITE = 2;
const DESC_F_AVAIL = 1 << 7;
const DESC_F_USED = 1 << 15;
const WRAP_BIT = 1 << 15;

/** Byte offsets of a record's fields (native/ring_journal.h struct RingJournal). */
const Off = {
  state: 0,
  givenBase: 4,
  descVa: 8,
  num: 16,
  innerCount: 18,
  committed: 20,
  pending: 22,
  pendingHead: 24,
  pendingValid: 26,
  commits: 28,
  inner: 64,
} as const;

export const RecordState = { Empty: 0, Running: 1, HandedOver: 2 } as const;

/** Where one vring's record lies: the mapping (for the C++ path) and a view of it (for TS). */
export interface JournalRecordRef {
  mappingId: number;
  offset: number;
  view: DataView;
}

/** A record's fields, as read. */
export interface JournalRecord {
  state: number;
  givenBase: number;
  descVa: bigint;
  num: number;
  committed: number;
  pending: number;
  pendingHead: number;
  pendingValid: boolean;
  /** Offsets from the commit slot of the pending flush's other used descriptors. */
  inner: number[];
  commits: number;
}

/** Step 1 of a flush's record (before the commit store): native/ring_journal.h Begin. */
export function journalBegin(
  j: JournalRecordRef,
  newUsed: number,
  head: number,
  fillAt: readonly number[],
  n: number,
): void {
  const v = j.view;
  for (let k = 1; k < n; k++) v.setUint16(j.offset + Off.inner + 2 * (k - 1), fillAt[k] as number, true);
  v.setUint16(j.offset + Off.innerCount, n - 1, true);
  v.setUint16(j.offset + Off.pending, newUsed, true);
  v.setUint16(j.offset + Off.pendingHead, head, true);
  v.setUint16(j.offset + Off.pendingValid, 1, true);
}

/** Step 3 (after the commit store): native/ring_journal.h Commit. */
export function journalCommit(j: JournalRecordRef, newUsed: number): void {
  const v = j.view;
  v.setUint16(j.offset + Off.committed, newUsed, true);
  v.setUint16(j.offset + Off.pendingValid, 0, true);
  v.setUint32(j.offset + Off.commits, (v.getUint32(j.offset + Off.commits, true) + 1) >>> 0, true);
}

/** A ring starts at `position` (used and next avail), as `ring`: its record says "running". */
export function journalStart(j: JournalRecordRef, ring: RingIdentity, position: number): void {
  const { view: v, offset: o } = j;
  v.setUint32(o + Off.state, RecordState.Empty, true);
  v.setUint32(o + Off.givenBase, ring.givenBase >>> 0, true);
  v.setBigUint64(o + Off.descVa, ring.descVa, true);
  v.setUint16(o + Off.num, ring.num, true);
  v.setUint16(o + Off.committed, position, true);
  v.setUint16(o + Off.pendingValid, 0, true);
  v.setUint32(o + Off.commits, 0, true);
  v.setUint32(o + Off.state, RecordState.Running, true);
}

export function readRecord(j: JournalRecordRef): JournalRecord {
  const v = j.view;
  const o = j.offset;
  const innerCount = v.getUint16(o + Off.innerCount, true);
  const pendingValid = v.getUint16(o + Off.pendingValid, true) === 1;
  return {
    state: v.getUint32(o + Off.state, true),
    givenBase: v.getUint32(o + Off.givenBase, true),
    descVa: v.getBigUint64(o + Off.descVa, true),
    num: v.getUint16(o + Off.num, true),
    committed: v.getUint16(o + Off.committed, true),
    pending: v.getUint16(o + Off.pending, true),
    pendingHead: v.getUint16(o + Off.pendingHead, true),
    pendingValid,
    inner: pendingValid ? Array.from({ length: innerCount }, (_, k) => v.getUint16(o + Off.inner + 2 * k, true)) : [],
    commits: v.getUint32(o + Off.commits, true),
  };
}

/** The ring as the starting session knows it. */
export interface RingIdentity {
  /** SET_VRING_BASE as the front-end gave it (avail | used << 16). */
  givenBase: number;
  descVa: bigint;
  num: number;
}

/** A descriptor's flags and length, read from guest memory (undefined: not mapped). */
export type DescReader = (slot: number) => { flags: number; len: number } | undefined;

export type Resume =
  | { kind: 'not-applicable'; why: string }
  /** The position to resume at (used and next avail: nothing is left in flight). */
  | { kind: 'committed' | 'pending'; position: number }
  /** As `pending`, once `writes` (flags, in order, the commit slot's last) finish the flush. */
  | { kind: 'rolled-forward'; position: number; writes: { slot: number; flags: number }[] };

/** §2.8.1: available for wrap counter `wrap` (AVAIL equals it, USED does not). */
function availableFor(flags: number, wrap: boolean): boolean {
  return ((flags & DESC_F_AVAIL) !== 0) === wrap && ((flags & DESC_F_USED) !== 0) !== wrap;
}

/**
 * Where a packed ring resumes, from its record and the descriptor ring as it is now; pure.
 * See native/ring_journal.h for why each case is right after a crash at any instruction.
 */
export function decideResume(rec: JournalRecord, ring: RingIdentity, readDesc: DescReader): Resume {
  if (rec.state !== RecordState.Running) return { kind: 'not-applicable', why: 'no running ring recorded' };
  if (rec.descVa !== ring.descVa || rec.num !== ring.num) {
    return { kind: 'not-applicable', why: 'another descriptor ring' };
  }
  if (rec.givenBase !== ring.givenBase >>> 0) {
    return { kind: 'not-applicable', why: 'the front-end gives a newer position' };
  }
  const valid = (p: number): boolean => (p & 0x7fff) < ring.num;
  if (!rec.pendingValid) {
    return valid(rec.committed)
      ? { kind: 'committed', position: rec.committed }
      : { kind: 'not-applicable', why: 'bad record' };
  }
  const headPos = rec.pendingHead & 0x7fff;
  const headWrap = (rec.pendingHead & WRAP_BIT) !== 0;
  if (!valid(rec.pending) || !valid(rec.pendingHead) || rec.inner.some((o) => o === 0 || o >= ring.num)) {
    return { kind: 'not-applicable', why: 'bad record' };
  }
  const head = readDesc(headPos);
  if (!head) return { kind: 'not-applicable', why: 'descriptor ring not mapped' };
  if (!availableFor(head.flags, headWrap)) return { kind: 'pending', position: rec.pending };
  // Not committed: the ids and lengths are all written; finish the flush as the dead backend
  // would have (packed-ring.ts flush: AVAIL and USED equal to the wrap counter at each
  // position, WRITE when data was written; §2.8.11: the first descriptor last).
  const writes: { slot: number; flags: number }[] = [];
  for (const off of [...rec.inner].reverse()) {
    const raw = headPos + off;
    const wrap = raw >= ring.num ? !headWrap : headWrap;
    const slot = raw % ring.num;
    const d = readDesc(slot);
    if (!d) return { kind: 'not-applicable', why: 'descriptor ring not mapped' };
    writes.push({ slot, flags: (d.len ? DESC_F_WRITE : 0) | (wrap ? DESC_F_AVAIL | DESC_F_USED : 0) });
  }
  writes.push({ slot: headPos, flags: (head.len ? DESC_F_WRITE : 0) | (headWrap ? DESC_F_AVAIL | DESC_F_USED : 0) });
  return { kind: 'rolled-forward', position: rec.pending, writes };
}

/** The mapping functions the journal needs (NativeBinding has them). */
export interface JournalNative {
  mmapFd(fd: number, size: number, offset: number): number;
  munmap(id: number): void;
  mappingBuffer(id: number, offset?: number, length?: number): ArrayBuffer;
}

/** Why a journal file cannot be used. */
export class JournalFileError extends Error {}

/** The journal file, mapped: one record per vring. */
export class RingJournal {
  private constructor(
    private readonly native: JournalNative,
    readonly path: string,
    readonly vrings: number,
    private readonly mappingId: number,
    private readonly view: DataView,
    /** What the file held when it was opened: 'new', 'reused' or 'reset' (another layout). */
    readonly opened: 'new' | 'reused' | 'reset',
  ) {}

  /**
   * Opens or creates `path` (0600) for `vrings` records. A file of another layout starts over
   * empty; one whose recorded process still runs (not this one) is refused: two backends must
   * not share a journal.
   */
  static open(native: JournalNative, path: string, vrings: number, isAlive: (pid: number) => boolean): RingJournal {
    const size = JOURNAL_HEADER_BYTES + vrings * JOURNAL_STRIDE;
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new JournalFileError(`${path} is not a regular file`);
      const h = Buffer.alloc(24);
      const got = readSync(fd, h, 0, h.length, 0);
      const fits =
        got === h.length &&
        h.toString('latin1', 0, 8) === JOURNAL_MAGIC &&
        h.readUInt32LE(8) === JOURNAL_VERSION &&
        h.readUInt32LE(12) === vrings &&
        h.readUInt32LE(16) === JOURNAL_STRIDE &&
        st.size === size;
      const pid = fits ? h.readUInt32LE(20) : 0;
      if (fits && pid !== 0 && pid !== process.pid && isAlive(pid)) {
        throw new JournalFileError(`${path} is in use by process ${pid}`);
      }
      if (!fits) {
        ftruncateSync(fd, 0);
        ftruncateSync(fd, size);
        h.fill(0);
        h.write(JOURNAL_MAGIC, 0, 'latin1');
        h.writeUInt32LE(JOURNAL_VERSION, 8);
        h.writeUInt32LE(vrings, 12);
        h.writeUInt32LE(JOURNAL_STRIDE, 16);
      }
      h.writeUInt32LE(process.pid, 20);
      writeSync(fd, h, 0, h.length, 0);
      const id = native.mmapFd(fd, size, 0);
      const view = new DataView(native.mappingBuffer(id));
      return new RingJournal(native, path, vrings, id, view, !fits ? (st.size === 0 ? 'new' : 'reset') : 'reused');
    } finally {
      closeSync(fd);
    }
  }

  ref(index: number): JournalRecordRef {
    if (index < 0 || index >= this.vrings) throw new RangeError(`journal: vring ${index} out of range`);
    return { mappingId: this.mappingId, offset: JOURNAL_HEADER_BYTES + index * JOURNAL_STRIDE, view: this.view };
  }

  read(index: number): JournalRecord {
    return readRecord(this.ref(index));
  }

  /** The ring starts at `position` (used and next avail): flushes record from here on. */
  markRunning(index: number, ring: RingIdentity, position: number): void {
    journalStart(this.ref(index), ring, position);
  }

  /** GET_VRING_BASE answered: the front-end knows the position now; the record no longer applies. */
  markHandedOver(index: number): void {
    const { view: v, offset: o } = this.ref(index);
    if (v.getUint32(o + Off.state, true) === RecordState.Running)
      v.setUint32(o + Off.state, RecordState.HandedOver, true);
  }

  /** Device reset: no ring of before exists any more. */
  clear(index: number): void {
    const { view: v, offset: o } = this.ref(index);
    v.setUint32(o + Off.state, RecordState.Empty, true);
  }

  close(): void {
    this.native.munmap(this.mappingId);
  }
}
