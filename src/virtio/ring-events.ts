/**
 * What a ring does, step by step, as events: avail index reads, chains walked (each
 * descriptor, indirect tables), used elements, flushes, notification decisions with the numbers
 * behind them, and kick suppression. Both ring implementations describe themselves in these
 * terms (the TS reference directly, the C++ ring through its observation records), and the ring
 * trace (src/trace/ring-trace.ts) and the ring page print them.
 */

export interface RingDesc {
  addr: string;
  len: number;
  flags: string[];
  next?: number;
  /** Packed ring: the buffer id field of a descriptor in the ring. */
  id?: number;
  /** Descriptors of the indirect table this one points to. */
  indirect?: RingDesc[];
}

export type RingEvent =
  | { ev: 'avail'; availIdx: number; lastAvailIdx: number; new: number }
  /** `head`: split, the head descriptor's index; packed, the buffer id. `slot`: packed, the ring position of its first descriptor. */
  | { ev: 'chain'; head: number; slot?: number; descs: RingDesc[]; outLen: number; inLen: number; error?: string }
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
  | { ev: 'kicks'; enabled: boolean; how: string }
  /**
   * Interrupt coalescing (C++ data plane, native/coalesce.h): an interrupt the ring asked for
   * held, joined to a held one, or sent (at once, early for its frames, at its time, at a stop).
   */
  | {
      ev: 'coalesce';
      action: 'held' | 'joined' | 'sent';
      mode: string;
      frames: number;
      why: string;
    }
  /** The fault plan lied here (src/faults/log.ts FaultLine's fields, without seq and t). */
  | {
      ev: 'fault';
      rule: string;
      do: string;
      event: number;
      ringIdx?: number;
      field?: string;
      old?: number | string;
      new?: number | string;
    };

export type NotifyEvent = Extract<RingEvent, { ev: 'notify' }>;
/** What decided a notification: the driver's flags, EVENT_IDX, NOTIFY_ON_EMPTY, or a first one. */
export type NotifyReason = 'flags' | 'event-idx' | 'on-empty' | 'first' | 'packed-flags' | 'packed-desc';

/** A packed ring position as vhost-user encodes it: bits 0-14 position, bit 15 wrap counter. */
export const packedPos = (v: number): string => `${v & 0x7fff} wrap ${(v >> 15) & 1}`;
const EVENT_FLAG_NAMES = ['ENABLE', 'DISABLE', 'DESC', 'reserved (3)'];

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
    case 'packed-flags':
      return {
        ...base,
        why: `driver event flags ${EVENT_FLAG_NAMES[(n.availFlags ?? 0) & 3]}`,
        availFlags: n.availFlags ?? 0,
      };
    case 'packed-desc': {
      const [ue, nu, old] = [n.usedEvent ?? 0, n.newUsedIdx ?? 0, n.oldUsedIdx ?? 0];
      return {
        ...base,
        why: `driver event DESC at ${packedPos(ue)}; used moved from ${packedPos(old)} to ${packedPos(nu)}${sent ? ', past it' : ', not past it'}`,
        usedEvent: ue,
        newUsedIdx: nu,
        oldUsedIdx: old,
      };
    }
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

const FLAG_NAMES: [number, string][] = [
  [1, 'NEXT'],
  [2, 'WRITE'],
  [4, 'INDIRECT'],
  [1 << 7, 'AVAIL'],
  [1 << 15, 'USED'],
];
export function descFlags(f: number): string[] {
  return FLAG_NAMES.filter(([b]) => f & b).map(([, n]) => n);
}
