/**
 * Frames the fault plan holds back (delay, rate, reorder) until their release: the twin of
 * native/frame_hold.h, for the TS data plane. Times are performance.now() milliseconds.
 */
export class FrameHold {
  /** netem's default queue limit: beyond it a held frame is dropped (the caller counts it). */
  static readonly LIMIT = 1000;
  private frames: { at: number; seq: number; gap: number; bytes: Buffer }[] = [];
  private seq = 0;

  get size(): number {
    return this.frames.length;
  }

  /** Holds `frame` until `at` (and, gap >= 0, until `gap` later frames went past it). */
  push(at: number, gap: number, frame: Buffer): boolean {
    if (this.frames.length >= FrameHold.LIMIT) return false;
    this.frames.push({ at, seq: this.seq++, gap, bytes: Buffer.from(frame) });
    this.sort();
    return true;
  }

  /** A frame went past the held ones (reorder). */
  passed(): void {
    let changed = false;
    for (const f of this.frames) {
      if (f.gap > 0 && --f.gap === 0) {
        f.at = 0;
        changed = true;
      }
    }
    if (changed) this.sort();
  }

  /** The earliest release time, or Infinity. */
  next(): number {
    return this.frames[0]?.at ?? Infinity;
  }

  /** Hands each frame due at `now` to fn, earliest first; fn returns false to keep it and stop. */
  release(now: number, fn: (frame: Buffer) => boolean): void {
    while (this.frames.length && (this.frames[0]?.at ?? Infinity) <= now) {
      if (!fn((this.frames[0] as { bytes: Buffer }).bytes)) return;
      this.frames.shift();
    }
  }

  clear(): void {
    this.frames = [];
  }

  private sort(): void {
    this.frames.sort((a, b) => a.at - b.at || a.seq - b.seq);
  }
}
