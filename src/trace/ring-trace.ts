/**
 * The ring trace (`--trace-rings FILE`, TS data path): what the device does on each vring, in
 * the spec's steps. Avail index reads, every chain walked (each descriptor, indirect tables),
 * used elements written, flushes, and every notification decision with the numbers behind it
 * (EVENT_IDX: used_event, the new and old used index, vring_need_event; otherwise the driver's
 * NO_INTERRUPT flag). Memory is bounded: when the output falls behind, events are dropped and
 * counted (`dropped` on the next record that gets through).
 */
import { closeTraceOutput, openTraceOutput, type TraceOutput } from './output.js';

export interface RingDesc {
  addr: string;
  len: number;
  flags: string[];
  next?: number;
  /** Descriptors of the indirect table this one points to. */
  indirect?: RingDesc[];
}

export type RingEvent =
  | { ev: 'avail'; availIdx: number; lastAvailIdx: number; new: number }
  | { ev: 'chain'; head: number; descs: RingDesc[]; outLen: number; inLen: number; error?: string }
  | { ev: 'used'; slot: number; id: number; len: number }
  | { ev: 'flush'; usedIdx: number; count: number }
  | {
      ev: 'notify';
      decision: 'sent' | 'suppressed';
      why: string;
      eventIdx: boolean;
      usedEvent?: number;
      newUsedIdx?: number;
      oldUsedIdx?: number;
      availFlags?: number;
    }
  | { ev: 'kicks'; enabled: boolean; how: string };

export type NotifyEvent = Extract<RingEvent, { ev: 'notify' }>;
/** What decided a notification: the driver's flags, EVENT_IDX, NOTIFY_ON_EMPTY, or a first one. */
export type NotifyReason = 'flags' | 'event-idx' | 'on-empty' | 'first';

const u16 = (v: number) => v & 0xffff;

/**
 * One notification decision as a trace event, with the sentence that explains it. Both ring
 * implementations report through this, so their traces read the same.
 */
export function notifyEvent(
  sent: boolean,
  reason: NotifyReason,
  eventIdx: boolean,
  n: { usedEvent?: number; newUsedIdx?: number; oldUsedIdx?: number; availFlags?: number } = {},
): NotifyEvent {
  const base = { ev: 'notify' as const, decision: sent ? ('sent' as const) : ('suppressed' as const), eventIdx };
  switch (reason) {
    case 'on-empty':
      return { ...base, why: 'NOTIFY_ON_EMPTY and the available ring is empty' };
    case 'flags':
      return {
        ...base,
        why: sent ? 'VRING_AVAIL_F_NO_INTERRUPT clear' : 'VRING_AVAIL_F_NO_INTERRUPT set',
        availFlags: n.availFlags ?? 0,
      };
    case 'first':
      return {
        ...base,
        why: 'first notification since the ring started',
        usedEvent: n.usedEvent ?? 0,
        newUsedIdx: n.newUsedIdx ?? 0,
      };
    case 'event-idx': {
      const [ue, nu, old] = [n.usedEvent ?? 0, n.newUsedIdx ?? 0, n.oldUsedIdx ?? 0];
      return {
        ...base,
        why: `vring_need_event: (u16)(${nu} - ${ue} - 1) = ${u16(nu - ue - 1)} ${sent ? '<' : '>='} (u16)(${nu} - ${old}) = ${u16(nu - old)}`,
        usedEvent: ue,
        newUsedIdx: nu,
        oldUsedIdx: old,
      };
    }
  }
}

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

const FLAG_NAMES: [number, string][] = [
  [1, 'NEXT'],
  [2, 'WRITE'],
  [4, 'INDIRECT'],
];
export function descFlags(f: number): string[] {
  return FLAG_NAMES.filter(([b]) => f & b).map(([, n]) => n);
}
