/**
 * The session's memory table: the regions the front-end shared, each mapped once through the
 * native addon. Checks every region before mapping anything, and changes are all-or-nothing:
 * a table that fails half way leaves the old table in place and no new fd or mapping behind.
 */
import { ErrorCode, SessionError } from '../errors.js';
import { hex } from '../features.js';
import type { NativeBinding } from '../native.js';
import { GuestMemoryRef } from '../virtio/guest-memory.js';
import type { MemRegion } from './codec.js';

/** Guest physical address. */
export type Gpa = bigint & { readonly __brand: 'Gpa' };
/** Front-end (QEMU) virtual address: what SET_VRING_ADDR speaks in. */
export type FrontendVa = bigint & { readonly __brand: 'FrontendVa' };

export interface MappedRegion {
  guestAddr: Gpa;
  size: bigint;
  userAddr: FrontendVa;
  mmapOffset: bigint;
  /** The region's fd, kept open while mapped (workers may map it again). */
  fd: number;
  /** Native mapping id. */
  mappingId: number;
  /**
   * Whether the region's file is sealed against shrinking (F_SEAL_SHRINK; QEMU seals its
   * memfds). An unsealed file can be cut short by the front-end after we mapped it, and the
   * next access to the lost pages raises SIGBUS.
   */
  sealed: boolean;
  /**
   * How many ADD_MEM_REG named this very region. QEMU runs one vhost device per queue pair and
   * each adds (and later removes) the same regions: repeats are references, not overlaps.
   */
  refs: number;
}

/** vhost-user GET_MAX_MEM_SLOTS: how many ADD_MEM_REG regions we accept. */
export const MAX_MEM_SLOTS = 509;
const U64_END = 1n << 64n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function overlaps(aStart: bigint, aSize: bigint, bStart: bigint, bSize: bigint): boolean {
  return aStart < bStart + bSize && bStart < aStart + aSize;
}

export function describeRegion(r: MemRegion): Record<string, string> {
  return { guestAddr: hex(r.guestAddr), size: hex(r.size), userAddr: hex(r.userAddr), mmapOffset: hex(r.mmapOffset) };
}

/** Syntax-independent checks of one region against itself and the regions it joins. */
function checkRegion(r: MemRegion, others: readonly MemRegion[]): void {
  const ctx = describeRegion(r);
  if (r.size === 0n) throw new SessionError(ErrorCode.BadRegion, 'memory region of size 0', ctx);
  if (r.guestAddr + r.size > U64_END || r.userAddr + r.size > U64_END || r.mmapOffset + r.size > U64_END) {
    throw new SessionError(ErrorCode.BadRegion, 'memory region wraps the 64-bit address space', ctx);
  }
  if (r.size > MAX_SAFE || r.mmapOffset > MAX_SAFE || r.mmapOffset + r.size > MAX_SAFE) {
    throw new SessionError(ErrorCode.BadRegion, 'memory region size or offset beyond 2^53', ctx);
  }
  for (const o of others) {
    if (overlaps(r.guestAddr, r.size, o.guestAddr, o.size)) {
      throw new SessionError(ErrorCode.RegionOverlap, 'memory region overlaps another in guest physical space', {
        ...ctx,
        other: describeRegion(o),
      });
    }
    if (overlaps(r.userAddr, r.size, o.userAddr, o.size)) {
      throw new SessionError(ErrorCode.RegionOverlap, 'memory region overlaps another in front-end address space', {
        ...ctx,
        other: describeRegion(o),
      });
    }
  }
}

/** SET_LOG_BASE's area, checked like a region: not empty, no wrap, within 2^53. */
export function checkLogArea(log: { mmapSize: bigint; mmapOffset: bigint }): void {
  const ctx = { mmapSize: hex(log.mmapSize), mmapOffset: hex(log.mmapOffset) };
  if (log.mmapSize === 0n) throw new SessionError(ErrorCode.BadRegion, 'dirty log of size 0', ctx);
  if (log.mmapSize > MAX_SAFE || log.mmapOffset > MAX_SAFE || log.mmapOffset + log.mmapSize > MAX_SAFE) {
    throw new SessionError(ErrorCode.BadRegion, 'dirty log size or offset beyond 2^53', ctx);
  }
}

/** The largest view of one region the TS reference takes (see refView). */
const VIEW_PIECE = 1n << 30n;

export class MemoryTable {
  private list: MappedRegion[] = [];

  constructor(private readonly native: NativeBinding) {}

  get regions(): readonly MappedRegion[] {
    return this.list;
  }

  /**
   * The mapped regions as the TS reference reads guest memory (views die with the mappings).
   * A JS view stops at 4 GiB, so a larger region is seen as adjacent pieces of 1 GiB: buffers
   * crossing a piece edge are split like buffers crossing a region edge (a ring area across
   * one is refused as across regions; the C++ path sees the region whole).
   */
  refView(): GuestMemoryRef {
    const pieces = [];
    for (const r of this.list) {
      for (let off = 0n; off < r.size; off += VIEW_PIECE) {
        const len = r.size - off < VIEW_PIECE ? r.size - off : VIEW_PIECE;
        pieces.push({
          gpa: r.guestAddr + off,
          size: len,
          va: r.userAddr + off,
          bytes: new Uint8Array(
            r.size <= VIEW_PIECE
              ? this.native.mappingBuffer(r.mappingId)
              : this.native.mappingBuffer(r.mappingId, Number(off), Number(len)),
          ),
        });
      }
    }
    return new GuestMemoryRef(pieces);
  }

  /**
   * SET_MEM_TABLE: replace the whole table. Takes ownership of `fds` (one per region) whether
   * it succeeds or not.
   */
  replace(regions: MemRegion[], fds: number[]): void {
    const fresh: MappedRegion[] = [];
    try {
      regions.forEach((r, i) => checkRegion(r, regions.slice(0, i)));
      regions.forEach((r, i) => fresh.push(this.map(r, fds[i] as number)));
    } catch (err) {
      for (const m of fresh) this.unmap(m);
      for (const fd of fds.slice(fresh.length)) this.native.close(fd);
      throw err;
    }
    this.clear();
    this.list = fresh;
  }

  /** ADD_MEM_REG: add one region (or one more reference to it). Takes ownership of `fd`. */
  add(r: MemRegion, fd: number): MappedRegion {
    const same = this.list.find(
      (m) =>
        m.guestAddr === r.guestAddr && m.size === r.size && m.userAddr === r.userAddr && m.mmapOffset === r.mmapOffset,
    );
    if (same) {
      this.native.close(fd);
      same.refs++;
      return same;
    }
    try {
      if (this.list.length >= MAX_MEM_SLOTS) {
        throw new SessionError(ErrorCode.TooManyRegions, `memory table full (${MAX_MEM_SLOTS} slots)`);
      }
      checkRegion(r, this.list);
    } catch (err) {
      this.native.close(fd);
      throw err;
    }
    let m: MappedRegion;
    try {
      m = this.map(r, fd);
    } catch (err) {
      this.native.close(fd);
      throw err;
    }
    this.list.push(m);
    return m;
  }

  /**
   * REM_MEM_REG: remove the region with this guest address, front-end address and size
   * (vhost-user.rst: "identified by its guest address, user address and size"; the mmap
   * offset is ignored).
   */
  remove(r: MemRegion): void {
    const i = this.list.findIndex((m) => m.guestAddr === r.guestAddr && m.userAddr === r.userAddr && m.size === r.size);
    if (i < 0) throw new SessionError(ErrorCode.NoSuchRegion, 'no such memory region', describeRegion(r));
    const m = this.list[i] as MappedRegion;
    if (--m.refs > 0) return;
    this.list.splice(i, 1);
    this.unmap(m);
  }

  clear(): void {
    for (const m of this.list) this.unmap(m);
    this.list = [];
  }

  /** Region holding `[gpa, gpa+len)` entirely, if any. */
  findGpa(gpa: bigint, len: bigint): MappedRegion | undefined {
    return this.list.find((m) => gpa >= m.guestAddr && gpa + len <= m.guestAddr + m.size);
  }

  /** Region holding front-end addresses `[va, va+len)` entirely, if any. */
  findVa(va: bigint, len: bigint): MappedRegion | undefined {
    return this.list.find((m) => va >= m.userAddr && va + len <= m.userAddr + m.size);
  }

  /**
   * The little-endian u16 at front-end address `va` in guest memory (a ring index: avail->idx,
   * used->idx), or undefined when that is not mapped.
   */
  u16At(va: bigint): number | undefined {
    const r = this.findVa(va, 2n);
    return r ? this.native.mappingU16(r.mappingId, Number(va - r.userAddr)) : undefined;
  }

  /**
   * Maps [offset, offset+size) of `fd` (which the caller keeps owning): the dirty log. The
   * native call refuses a range outside the file, so a later access cannot raise SIGBUS.
   */
  mapArea(fd: number, size: bigint, offset: bigint, what: string): number {
    try {
      return this.native.mmapFd(fd, Number(size), Number(offset));
    } catch (err) {
      const e = err as { code?: string; message?: string };
      throw new SessionError(ErrorCode.MapFailed, `cannot map ${what}: ${e.message ?? String(err)}`, {
        size: hex(size),
        offset: hex(offset),
        errno: e.code,
      });
    }
  }

  private map(r: MemRegion, fd: number): MappedRegion {
    let mappingId: number;
    try {
      mappingId = this.native.mmapFd(fd, Number(r.size), Number(r.mmapOffset));
    } catch (err) {
      // The caller still owns fd and closes it.
      const e = err as { code?: string; message?: string };
      throw new SessionError(ErrorCode.MapFailed, `cannot map memory region: ${e.message ?? String(err)}`, {
        ...describeRegion(r),
        errno: e.code,
      });
    }
    return {
      guestAddr: r.guestAddr as Gpa,
      size: r.size,
      userAddr: r.userAddr as FrontendVa,
      mmapOffset: r.mmapOffset,
      fd,
      mappingId,
      // F_SEAL_SHRINK = 2 (fcntl.h); -1: a file that cannot carry seals.
      sealed: (() => {
        const seals = this.native.fileSeals(fd);
        return seals >= 0 && (seals & 2) !== 0;
      })(),
      refs: 1,
    };
  }

  private unmap(m: MappedRegion): void {
    try {
      this.native.munmap(m.mappingId);
    } finally {
      this.native.close(m.fd);
    }
  }
}
