/**
 * The ring trace (`--trace-rings FILE`, TS data path): what the device does on each vring, in
 * the spec's steps. Avail index reads, every chain walked (each descriptor, indirect tables),
 * used elements written, flushes, and every notification decision with the numbers behind it
 * (EVENT_IDX: used_event, the new and old used index, vring_need_event; otherwise the driver's
 * NO_INTERRUPT flag). Memory is bounded: when the output falls behind, events are dropped and
 * counted (`dropped` on the next record that gets through).
 */
import type { RingEvent } from '../virtio/ring-events.js';
import { closeTraceOutput, openTraceOutput, type TraceOutput } from '../util/output.js';

export class RingTrace {
  private readonly out: TraceOutput;
  private readonly t0 = Date.now();
  private backlog = 0;
  /** Events dropped because the output fell more than `maxBacklog` bytes behind. */
  dropped = 0;
  private droppedReported = 0;

  constructor(
    target: string | NodeJS.WritableStream,
    private readonly maxBacklog = 8 << 20,
  ) {
    this.out = openTraceOutput(target);
  }

  /** One event; `atMs` (epoch milliseconds) when it happened earlier than now (C++ records). */
  record(vring: number, e: RingEvent, atMs = Date.now()): void {
    if (this.backlog > this.maxBacklog) {
      this.dropped++;
      return;
    }
    const rec: Record<string, unknown> = { t: Math.max(0, Math.round((atMs - this.t0) * 1000) / 1000), vring, ...e };
    if (this.dropped > this.droppedReported) {
      rec.dropped = this.dropped - this.droppedReported;
      this.droppedReported = this.dropped;
    }
    const line = `${JSON.stringify(rec)}\n`;
    this.backlog += line.length;
    this.out.write(line, () => {
      this.backlog -= line.length;
    });
  }

  close(): void {
    closeTraceOutput(this.out);
  }
}
