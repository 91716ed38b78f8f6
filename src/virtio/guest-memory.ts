/**
 * Guest memory for the TS reference: regions over plain byte arrays. Same translation rules as
 * native/guest_memory.h: the whole [addr, addr+len) range is checked, and a buffer crossing a
 * region edge is split into one segment per region.
 */

export interface RefRegion {
  gpa: bigint;
  size: bigint;
  va: bigint;
  bytes: Uint8Array;
}

export interface Segment {
  gpa: bigint;
  len: number;
  /** The region's bytes and this segment's offset in them. */
  bytes: Uint8Array;
  offset: number;
}

/** A ring area as the reference rings read it: a view over its region and its offset there. */
export interface Area {
  view: DataView;
  offset: number;
}

export class GuestMemoryRef {
  constructor(readonly regions: RefRegion[]) {}

  findGpa(gpa: bigint): RefRegion | undefined {
    return this.regions.find((r) => gpa >= r.gpa && gpa - r.gpa < r.size);
  }

  /** View of front-end VA range [va, va+len) inside one region, or undefined. */
  vaView(va: bigint, len: bigint): { bytes: Uint8Array; offset: number } | undefined {
    for (const r of this.regions) {
      if (va >= r.va && va - r.va < r.size && len <= r.size - (va - r.va))
        return { bytes: r.bytes, offset: Number(va - r.va) };
    }
    return undefined;
  }

  /** A ring area at front-end VA [va, va+len), inside one region, or undefined. */
  area(va: bigint, len: number): Area | undefined {
    const v = this.vaView(va, BigInt(len));
    return v
      ? { view: new DataView(v.bytes.buffer, v.bytes.byteOffset, v.bytes.byteLength), offset: v.offset }
      : undefined;
  }

  /** The guest physical address of front-end VA `va` (the dirty log speaks GPAs). */
  vaToGpa(va: bigint): bigint | undefined {
    const r = this.regions.find((x) => va >= x.va && va - x.va < x.size);
    return r ? r.gpa + (va - r.va) : undefined;
  }

  /** View of GPA range [gpa, gpa+len) inside one region, or undefined. */
  gpaViewContiguous(gpa: bigint, len: bigint): { bytes: Uint8Array; offset: number } | undefined {
    const r = this.findGpa(gpa);
    if (!r || len > r.size - (gpa - r.gpa)) return undefined;
    return { bytes: r.bytes, offset: Number(gpa - r.gpa) };
  }

  /**
   * Appends the segments of [gpa, gpa+len) to `out`, at most `max` in all. Returns 'ok',
   * 'out-of-memory' or 'too-many'.
   */
  split(gpa: bigint, len: bigint, out: Segment[], max: number): 'ok' | 'out-of-memory' | 'too-many' {
    if (gpa + len > 0xffff_ffff_ffff_ffffn) return 'out-of-memory';
    while (len > 0n) {
      const r = this.findGpa(gpa);
      if (!r) return 'out-of-memory';
      const off = gpa - r.gpa;
      const chunk = r.size - off < len ? r.size - off : len;
      if (out.length >= max) return 'too-many';
      out.push({ gpa, len: Number(chunk), bytes: r.bytes, offset: Number(off) });
      gpa += chunk;
      len -= chunk;
    }
    return 'ok';
  }
}
