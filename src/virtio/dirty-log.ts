/**
 * The dirty page log of live migration, as vhost-user.rst "Migration" states it: one bit per
 * 4 KiB guest page, in the shared area SET_LOG_BASE gives.
 *
 *   page = addr / VHOST_LOG_PAGE
 *   log[page / 8] |= 1 << page % 8
 *
 * "Use atomic operations, as the log may be concurrently manipulated": the front-end reads
 * and clears bits while the device runs. The TS reference marks each write as it happens;
 * the C++ path (native/dirty_log.h) gathers a burst's marks and ORs them at its end. Both
 * leave the same bits, and a differential test compares the bytes.
 */

/** vhost-user.rst: "Dirty pages are of size VHOST_LOG_PAGE = 0x1000 (4KB)". */
export const LOG_PAGE = 0x1000n;

export class DirtyLog {
  constructor(private readonly bytes: Uint8Array) {}

  /**
   * Marks the pages of guest physical range [gpa, gpa+len). Call after writing: a page
   * marked first could be copied and cleared before the data lands. Pages beyond the log are
   * not marked (the front-end sizes it to cover all guest memory).
   */
  mark(gpa: bigint, len: number): void {
    if (len <= 0) return;
    const first = gpa / LOG_PAGE;
    const last = (gpa + BigInt(len) - 1n) / LOG_PAGE;
    for (let page = first; page <= last; page++) {
      const byte = page / 8n;
      if (byte >= BigInt(this.bytes.length)) return;
      Atomics.or(this.bytes, Number(byte), 1 << Number(page % 8n));
    }
  }
}
