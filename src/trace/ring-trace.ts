/**
 * The ring trace (`--trace-rings FILE`, TS data path): what the device does on each vring, in
 * the spec's steps. Avail index reads, every chain walked (each descriptor, indirect tables),
 * used elements written, flushes, and every notification decision with the numbers behind it
 * (EVENT_IDX: used_event, the new and old used index, vring_need_event; otherwise the driver's
 * NO_INTERRUPT flag). Memory is bounded: when the output falls behind, events are dropped and
 * counted (`dropped` on the next record that gets through).
 */
import type { RingEvent } from '../virtio/ring-events.js';
import { type NarratedEvent, RingNarrator } from './ring-narrator.js';
import { closeTraceOutput, openTraceOutput, type TraceOutput } from '../util/output.js';

/**
 * The last events of a ring trace, narrated, for the ring page's player (`/ring-events`):
 * bounded, oldest dropped first.
 */
export class RingHistory {
  private readonly narrator = new RingNarrator();
  private readonly events: NarratedEvent[] = [];
  private start = 0; // index of the oldest kept event in `events` (trimmed in chunks)

  constructor(readonly limit = 20_000) {}

  add(vring: number, e: RingEvent, tMs: number): void {
    this.events.push(this.narrator.narrate(vring, e, tMs));
    if (this.events.length - this.start > this.limit) this.start++;
    if (this.start > this.limit) {
      this.events.splice(0, this.start);
      this.start = 0;
    }
  }

  /** Events with `seq` after `after`, oldest first, at most `max`; and the oldest seq still kept. */
  since(after: number, max = 2000): { oldest: number; events: NarratedEvent[] } {
    const kept = this.events.length - this.start;
    const first = this.events[this.start];
    if (!first) return { oldest: 0, events: [] };
    // seq is contiguous: the kept events are first.seq .. first.seq + kept - 1.
    const from = Math.max(0, after + 1 - first.seq);
    return { oldest: first.seq, events: this.events.slice(this.start + from, this.start + Math.min(kept, from + max)) };
  }
}

export class RingTrace {
  /** The narrated recent events (the ring page's player). */
  readonly history = new RingHistory();
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
    const t = Math.max(0, Math.round((atMs - this.t0) * 1000) / 1000);
    this.history.add(vring, e, t);
    if (this.backlog > this.maxBacklog) {
      this.dropped++;
      return;
    }
    const rec: Record<string, unknown> = { t, vring, ...e };
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
