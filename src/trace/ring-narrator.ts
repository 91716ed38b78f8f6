/**
 * The ring trace told as a story: each event (src/virtio/ring-events.ts) gets a sentence, the
 * section of the virtio 1.2 spec behind it, the slots it touched and the ring's indices after
 * it. `explain` prints a `--trace-rings` file this way, and the ring page's player steps
 * through the same narrated events (src/metrics/http.ts `/ring-events`).
 *
 * The narrator keeps what the events alone imply, per vring: a split ring's avail.idx,
 * last_avail_idx and used.idx, a packed ring's next avail and next used positions, and the
 * descriptors of every chain in flight (a used element names only its chain's head or buffer
 * id). What came before the first event is unknown and shown as such.
 */
import type { RingDesc, RingEvent } from '../virtio/ring-events.js';

const SPLIT = 'virtio 1.2 §2.7';
const PACKED = 'virtio 1.2 §2.8';

/** The places an event touched: avail ring entries, descriptors (or packed slots), used ring slots. */
export interface Touched {
  /** Split: available ring entries, as free-running indices (the slot is the index mod size). */
  avail?: number[];
  /** Split: descriptor table indices; packed: descriptor ring slots (mod size). */
  desc?: number[];
  /** Split: used ring slots, as free-running indices (mod size). */
  used?: number[];
}

/** A ring's indices after an event (undefined: not known from the trace so far). */
export interface RingPosition {
  layout?: 'split' | 'packed';
  availIdx?: number;
  /** Split: last_avail_idx; packed: the next descriptor the device reads (position, wrap in bit 15). */
  lastAvailIdx?: number;
  /** Split: used.idx as published; packed: next used position (wrap in bit 15). */
  usedIdx?: number;
  /** Chains popped by the device and not yet published as used. */
  inFlight: number;
}

export interface NarratedEvent {
  seq: number;
  /** Seconds since the trace began (the trace's `t`, in ms, / 1000). */
  t: number;
  vring: number;
  event: RingEvent;
  say: string;
  cite: string;
  touched: Touched;
  at: RingPosition;
}

interface VringStory {
  layout?: 'split' | 'packed';
  availIdx?: number;
  lastAvailIdx?: number;
  usedIdx?: number;
  /** Packed: the position after the last buffer read (not wrapped: the size is not in the trace), and that lap's wrap counter. */
  availPos?: number;
  availWrap?: number;
  /** Chains in flight: head (split) or buffer id (packed) -> descriptors (split) or slots (packed). */
  inFlight: Map<number, number[]>;
  /** Used elements written and not yet flushed. */
  pendingUsed: number;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const range = (from: number, count: number, cap = 64) =>
  Array.from({ length: Math.max(0, Math.min(count, cap)) }, (_, i) => (from + i) & 0xffff);

/** A split chain's descriptor indices, following `next` from the head. */
function splitDescIndices(head: number, descs: RingDesc[]): number[] {
  const out = [head];
  for (const d of descs.slice(0, -1)) if (d.next !== undefined) out.push(d.next);
  return out.slice(0, descs.length);
}

function descText(descs: RingDesc[]): string {
  return descs
    .map((d) => {
      const dir = d.flags.includes('WRITE') ? 'writable' : 'readable';
      if (d.indirect) return `INDIRECT table of ${plural(d.indirect.length, 'descriptor')}`;
      return `${d.len} B ${dir}`;
    })
    .join(' + ');
}

export class RingNarrator {
  private readonly rings = new Map<number, VringStory>();
  private seq = 0;

  private story(vring: number): VringStory {
    let s = this.rings.get(vring);
    if (!s) {
      s = { inFlight: new Map(), pendingUsed: 0 };
      this.rings.set(vring, s);
    }
    return s;
  }

  /** One event, in trace order; `tMs` is the trace's `t`. */
  narrate(vring: number, event: RingEvent, tMs: number): NarratedEvent {
    const s = this.story(vring);
    const told = this.tell(s, event);
    return {
      seq: ++this.seq,
      t: tMs / 1000,
      vring,
      event,
      ...told,
      at: {
        layout: s.layout,
        availIdx: s.availIdx,
        lastAvailIdx: s.layout === 'packed' ? this.packedAvail(s) : s.lastAvailIdx,
        usedIdx: s.usedIdx,
        inFlight: s.inFlight.size,
      },
    };
  }

  private packedAvail(s: VringStory): number | undefined {
    return s.availPos === undefined ? undefined : s.availPos | ((s.availWrap ?? 0) << 15);
  }

  private tell(s: VringStory, e: RingEvent): { say: string; cite: string; touched: Touched } {
    switch (e.ev) {
      case 'avail': {
        s.layout = 'split';
        s.availIdx = e.availIdx;
        s.lastAvailIdx = e.lastAvailIdx;
        return {
          say:
            e.new === 0
              ? `read avail->idx = ${e.availIdx}: nothing new since last_avail_idx ${e.lastAvailIdx}`
              : `read avail->idx = ${e.availIdx}: ${plural(e.new, 'new entry', 'new entries')} since last_avail_idx ${e.lastAvailIdx}, each the head of a chain the driver offered`,
          cite: `${SPLIT}.6 The Virtqueue Available Ring ("idx field indicates where the driver would put the next descriptor entry")`,
          touched: { avail: range(e.lastAvailIdx, e.new) },
        };
      }
      case 'chain':
        return e.slot !== undefined || e.descs.some((d) => d.id !== undefined)
          ? this.packedChain(s, e)
          : this.splitChain(s, e);
      case 'used': {
        const chain = s.inFlight.get(e.id);
        s.inFlight.delete(e.id);
        s.pendingUsed++;
        if (s.layout === 'packed') {
          return {
            say: `used descriptor written at slot ${e.slot}: buffer id ${e.id}, len ${e.len} (bytes the device wrote); it stands for the buffer's whole list`,
            cite: `${PACKED}.6 Next Flag: Descriptor Chaining ("the device only writes out a single used descriptor for the whole list")`,
            touched: { desc: [e.slot, ...(chain ?? []).filter((x) => x !== e.slot)] },
          };
        }
        return {
          say: `used ring slot ${e.slot}: id ${e.id} (the chain's head), len ${e.len} (bytes the device wrote into it)`,
          cite: `${SPLIT}.8 The Virtqueue Used Ring ("id indicates the head entry of the descriptor chain"; len: "the number of bytes written")`,
          touched: { used: [e.slot], desc: chain ?? [e.id] },
        };
      }
      case 'flush': {
        s.pendingUsed = 0;
        s.usedIdx = e.usedIdx;
        if (s.layout === 'packed') {
          return {
            say: `${plural(e.count, 'used descriptor')} handed back by their flags (AVAIL and USED both equal to the device's wrap counter), first one last; next used at ${e.usedIdx & 0x7fff} wrap ${e.usedIdx >> 15}`,
            cite: `${PACKED}.1 Driver and Device Ring Wrap Counters; §2.8.11 Multi-buffer requests`,
            touched: {},
          };
        }
        return {
          say: `used->idx = ${e.usedIdx}: ${plural(e.count, 'used element')} published at once (the idx store is a release: the elements are visible first)`,
          cite: `${SPLIT}.8 The Virtqueue Used Ring; §2.7.14 Receiving Used Buffers From The Device`,
          touched: { used: range((e.usedIdx - e.count) & 0xffff, e.count) },
        };
      }
      case 'notify':
        return {
          say: `interrupt ${e.decision === 'sent' ? 'sent' : 'suppressed'}: ${e.why}`,
          cite:
            s.layout === 'packed'
              ? `${PACKED}.10 Driver and Device Event Suppression`
              : e.eventIdx
                ? `${SPLIT}.7 Used Buffer Notification Suppression (VIRTIO_F_EVENT_IDX: the driver's used_event; vring_need_event)`
                : `${SPLIT}.7 Used Buffer Notification Suppression (VRING_AVAIL_F_NO_INTERRUPT)`,
          touched: {},
        };
      case 'kicks':
        return {
          say: `the device ${e.enabled ? 'asks for' : 'no longer asks for'} kicks: ${e.how}`,
          cite:
            s.layout === 'packed'
              ? `${PACKED}.10 Driver and Device Event Suppression`
              : `${SPLIT}.10 Available Buffer Notification Suppression`,
          touched: {},
        };
      case 'coalesce':
        return {
          say: `interrupt coalescing (${e.mode}): ${e.action}${e.frames ? ` for ${plural(e.frames, 'frame')}` : ''}: ${e.why}`,
          cite: 'not in the spec: the device may delay a notification it owes (docs/interrupts.md)',
          touched: {},
        };
      case 'fault':
        return {
          say: `fault plan rule ${e.rule} (${e.do}) lied here${e.field ? `: ${e.field} ${e.old} -> ${e.new}` : ''}`,
          cite: 'a deliberate violation from the fault plan (docs/faults.md)',
          touched: {},
        };
    }
  }

  private splitChain(s: VringStory, e: Extract<RingEvent, { ev: 'chain' }>) {
    s.layout = 'split';
    const at = s.lastAvailIdx;
    const descs = splitDescIndices(e.head, e.descs);
    const touched: Touched = { desc: descs, ...(at !== undefined ? { avail: [at] } : {}) };
    if (e.error) {
      return {
        say: `chain at head ${e.head} refused: ${e.error}; the queue stops (a driver violation), the others go on`,
        cite: `${SPLIT}.5 The Virtqueue Descriptor Table (the device requirements, §2.7.5.1-2.7.5.3)`,
        touched,
      };
    }
    if (s.lastAvailIdx !== undefined) s.lastAvailIdx = (s.lastAvailIdx + 1) & 0xffff;
    s.inFlight.set(e.head, descs);
    const indirect = e.descs.some((d) => d.indirect);
    return {
      say: `avail entry ${at ?? '?'} names head ${e.head}: a chain of ${plural(e.descs.length, 'descriptor')} (${descText(e.descs)}), ${e.outLen} B for the device to read, ${e.inLen} B for it to write`,
      cite: indirect
        ? `${SPLIT}.5.3 Indirect Descriptors`
        : `${SPLIT}.5 The Virtqueue Descriptor Table (NEXT links the chain; WRITE marks device-writable)`,
      touched,
    };
  }

  private packedChain(s: VringStory, e: Extract<RingEvent, { ev: 'chain' }>) {
    s.layout = 'packed';
    const slots = e.descs.length; // an indirect buffer takes one slot
    const first = e.slot;
    const touched: Touched = first !== undefined ? { desc: range(first, slots, 256) } : {};
    if (e.error) {
      return {
        say: `buffer at slot ${first ?? '?'} refused: ${e.error}; the queue stops (a driver violation), the others go on`,
        cite: `${PACKED} Packed Virtqueues (the device requirements)`,
        touched,
      };
    }
    // The device's next read is right after this buffer's slots (the page wraps it by the size;
    // the wrap counter is the AVAIL bit the driver set on this lap: §2.8.1).
    if (first !== undefined) {
      s.availPos = first + slots;
      s.availWrap = e.descs[0]?.flags.includes('AVAIL') ? 1 : 0;
    }
    s.inFlight.set(e.head, touched.desc ?? []);
    const id = e.head;
    return {
      say: `slot ${first ?? '?'}: buffer id ${id}, ${plural(slots, 'descriptor')} marked available by the driver (${descText(e.descs)}), ${e.outLen} B to read, ${e.inLen} B to write`,
      cite: `${PACKED}.1 Driver and Device Ring Wrap Counters (AVAIL equals the driver's counter, USED does not); §2.8.6 Next Flag`,
      touched,
    };
  }
}

/** A whole trace, narrated: JSON lines of `--trace-rings` as read back. */
export function narrateTrace(records: ({ t: number; vring: number } & RingEvent)[]): NarratedEvent[] {
  const n = new RingNarrator();
  return records.map((r) => {
    const { t, vring, ...rest } = r as { t: number; vring: number; dropped?: number } & RingEvent;
    delete (rest as { dropped?: number }).dropped;
    return n.narrate(vring, rest as RingEvent, t);
  });
}
