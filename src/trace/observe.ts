/**
 * Decodes the observation records the C++ workers write (native/observe.h): captured frames
 * for --pcap and ring trace steps for --trace-rings. JS drains them in bursts on a timer, so
 * nothing here runs per packet on the worker threads.
 *
 * Every record: [u16 type][u16 vring][u32 0][u64 CLOCK_REALTIME ns], then a body by type.
 */
import { ringErrorName } from '../virtio/ring-errors.js';
import type { FaultEvent } from '../faults/log.js';
import type { CapturedFrame, PcapWriter } from './pcapng.js';
import type { RingTrace } from './ring-trace.js';
import {
  descFlags,
  notifyEvent,
  packedPos,
  type NotifyReason,
  type RingDesc,
  type RingEvent,
} from '../virtio/ring-events.js';

export type { CapturedFrame };

export const OBS = {
  frame: 1,
  avail: 2,
  chain: 3,
  used: 4,
  flush: 5,
  notify: 6,
  kicks: 7,
  fault: 8,
  coalesce: 9,
} as const;
const COALESCE_MODE_NAMES = ['off', 'static', 'adaptive'];
type CoalesceAction = Extract<RingEvent, { ev: 'coalesce' }>['action'];
const OBS_HEADER = 16;
const DESC_F_NEXT = 1;
const REASONS: NotifyReason[] = ['flags', 'event-idx', 'on-empty', 'first', 'packed-flags', 'packed-desc'];

export type ObserveRecord =
  | { kind: 'frame'; frame: CapturedFrame }
  | { kind: 'ring'; vring: number; timeNs: bigint; event: RingEvent }
  | { kind: 'fault'; vring: number; timeNs: bigint; fault: Omit<FaultEvent, 't'> };

/** Decodes one record body (after its u32 length prefix). Unknown types yield undefined. */
export function decodeRecord(rec: Buffer): ObserveRecord | undefined {
  if (rec.length < OBS_HEADER) return undefined;
  const type = rec.readUInt16LE(0);
  const vring = rec.readUInt16LE(2);
  const timeNs = rec.readBigUInt64LE(8);
  const b = rec.subarray(OBS_HEADER);
  const ring = (event: RingEvent): ObserveRecord => ({ kind: 'ring', vring, timeNs, event });
  switch (type) {
    case OBS.frame: {
      // u32 origLen, u16 hdrLen, u8 direction, u8 rules; header, data, then `rules` u16s: the
      // fault plan rules behind this frame's lies.
      const hdrLen = b.readUInt16LE(4);
      const nrules = b[7] as number;
      const end = b.length - 2 * nrules;
      const rules = Array.from({ length: nrules }, (_, i) => b.readUInt16LE(end + 2 * i));
      return {
        kind: 'frame',
        frame: {
          vring,
          timeNs,
          direction: b[6] === 1 ? 'fromGuest' : 'toGuest',
          origLen: b.readUInt32LE(0),
          header: Buffer.from(b.subarray(8, 8 + hdrLen)),
          data: Buffer.from(b.subarray(8 + hdrLen, end)),
          ...(nrules ? { faultRules: rules } : {}),
        },
      };
    }
    case OBS.avail: {
      const availIdx = b.readUInt16LE(0);
      const lastAvailIdx = b.readUInt16LE(2);
      return ring({ ev: 'avail', availIdx, lastAvailIdx, new: (availIdx - lastAvailIdx) & 0xffff });
    }
    case OBS.chain: {
      const n = b.readUInt16LE(2);
      const error = b.readUInt16LE(4);
      const slot = b.readUInt16LE(6); // packed: the first descriptor's position; 0xffff split
      const descs: RingDesc[] = [];
      for (let i = 0; i < n; i++) {
        const at = 24 + 24 * i;
        const flags = b.readUInt16LE(at + 12);
        const d: RingDesc = {
          addr: `0x${b.readBigUInt64LE(at).toString(16)}`,
          len: b.readUInt32LE(at + 8),
          flags: descFlags(flags),
          // Packed ring descriptors carry a buffer id where split ones carry next.
          ...(b[at + 17] === 1
            ? b[at + 16] === 1
              ? {}
              : { id: b.readUInt16LE(at + 14) }
            : flags & DESC_F_NEXT
              ? { next: b.readUInt16LE(at + 14) }
              : {}),
        };
        const parent = descs[descs.length - 1];
        if (b[at + 16] === 1 && parent) (parent.indirect ??= []).push(d);
        else descs.push(d);
      }
      return ring({
        ev: 'chain',
        head: b.readUInt16LE(0),
        ...(slot !== 0xffff ? { slot } : {}),
        descs,
        outLen: Number(b.readBigUInt64LE(8)),
        inLen: Number(b.readBigUInt64LE(16)),
        ...(error ? { error: ringErrorName(error) } : {}),
      });
    }
    case OBS.used:
      return ring({ ev: 'used', slot: b.readUInt16LE(0), id: b.readUInt32LE(4), len: b.readUInt32LE(8) });
    case OBS.flush:
      return ring({ ev: 'flush', usedIdx: b.readUInt16LE(0), count: b.readUInt16LE(2) });
    case OBS.notify:
      return ring(
        notifyEvent(b[0] === 1, REASONS[b[1] ?? 0] ?? 'flags', b[2] === 1, {
          usedEvent: b.readUInt16LE(4),
          newUsedIdx: b.readUInt16LE(6),
          oldUsedIdx: b.readUInt16LE(8),
          availFlags: b.readUInt16LE(10),
        }),
      );
    case OBS.fault: {
      // u16 rule, u8 action, u8 field (0xff: none), u32 ringIdx (~0: none), u64 event, old, new
      const field = b[3] as number;
      const ringIdx = b.readUInt32LE(4);
      return {
        kind: 'fault',
        vring,
        timeNs,
        fault: {
          rule: b.readUInt16LE(0),
          action: b[2] as number,
          vring,
          event: b.readBigUInt64LE(8),
          ...(ringIdx !== 0xffffffff ? { ringIdx } : {}),
          ...(field !== 0xff ? { field, old: b.readBigUInt64LE(16), new: b.readBigUInt64LE(24) } : {}),
        },
      };
    }
    case OBS.kicks: {
      const enabled = b[0] === 1;
      const v = b.readUInt16LE(2);
      const how =
        [
          `used->flags NO_NOTIFY ${enabled ? 'cleared' : 'set'}`,
          `avail_event = ${v}`,
          `device event: ${enabled ? 'ENABLE' : 'DISABLE'}`,
          `device event: DESC at ${packedPos(v)}`,
        ][b[1] ?? 0] ?? `kicks mode ${b[1]}`;
      return ring({ ev: 'kicks', enabled, how });
    }
    case OBS.coalesce: {
      const frames = b.readUInt16LE(2);
      const us = b.readUInt32LE(4);
      const mode = COALESCE_MODE_NAMES[b[1] ?? 0] ?? `mode ${b[1]}`;
      const said: [CoalesceAction, string][] = [
        ['held', `interrupt held ${us} us (${frames} used entries owed)`],
        ['joined', `joined the held interrupt (${frames} used entries owed)`],
        ['sent', `sent at once: the last interrupt was ${us} us ago`],
        ['sent', `sent early: ${frames} used entries owed`],
        ['sent', `held interrupt sent at its time (${frames} used entries)`],
        ['sent', `held interrupt sent as the ring stopped (${frames} used entries)`],
      ];
      const [action, why] = said[b[0] ?? 0] ?? ['sent', `coalesce action ${b[0]}`];
      return ring({ ev: 'coalesce', action, mode, frames, why });
    }
    default:
      return undefined;
  }
}

/** Walks a drained buffer of [u32 len][record]... */
export function* records(buf: Buffer, length = buf.length): Generator<ObserveRecord> {
  let at = 0;
  while (at + 4 <= length) {
    const len = buf.readUInt32LE(at);
    const r = decodeRecord(buf.subarray(at + 4, at + 4 + len));
    at += 4 + len;
    if (r) yield r;
  }
}

/** Where observed frames and ring steps go; shared by every session of one process. */
export interface Observers {
  capture?: PcapWriter;
  ringTrace?: RingTrace;
}
