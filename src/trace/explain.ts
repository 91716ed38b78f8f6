/**
 * `vhost-user-net explain FILE`: a protocol trace (`--trace-messages`), or a ring trace
 * (`--trace-rings`, told by ring-narrator.ts), as a readable, annotated timeline. Each step says what it means and cites the section of QEMU's
 * docs/interop/vhost-user.rst (or the virtio spec) behind it.
 */
import { readFileSync } from 'node:fs';
import type { RingEvent } from '../virtio/ring-events.js';
import type { TraceRecord } from './message-trace.js';
import { narrateTrace } from './ring-narrator.js';

const VU = 'vhost-user.rst';
const MSG = `${VU} "Front-end message types"`;

/** What each request is for, in a sentence, and where the spec says so. */
export const EXPLANATIONS: Record<string, { what: string; cite: string }> = {
  GET_FEATURES: {
    what: 'the front-end asks which virtio features the device offers',
    cite: `${MSG}: VHOST_USER_GET_FEATURES`,
  },
  SET_FEATURES: {
    what: 'the front-end acks the virtio features the driver accepted (a subset of the offer)',
    cite: `${MSG}: VHOST_USER_SET_FEATURES`,
  },
  GET_PROTOCOL_FEATURES: {
    what: 'the front-end asks which vhost-user protocol extensions the backend implements',
    cite: `${VU} "Protocol features"`,
  },
  SET_PROTOCOL_FEATURES: {
    what: 'the front-end enables the protocol extensions both sides know',
    cite: `${VU} "Protocol features"`,
  },
  SET_OWNER: {
    what: 'the front-end claims the device (sent once per vhost device, so once per queue pair)',
    cite: `${MSG}: VHOST_USER_SET_OWNER`,
  },
  RESET_OWNER: {
    what: 'the front-end gives the device up; everything is reset',
    cite: `${MSG}: VHOST_USER_RESET_OWNER`,
  },
  RESET_DEVICE: {
    what: 'rings are stopped and forgotten, device state reset; the connection stays',
    cite: `${MSG}: VHOST_USER_RESET_DEVICE`,
  },
  GET_QUEUE_NUM: {
    what: 'the front-end asks how many queue pairs the backend serves',
    cite: `${MSG}: VHOST_USER_GET_QUEUE_NUM`,
  },
  GET_MAX_MEM_SLOTS: {
    what: 'how many memory regions ADD_MEM_REG may add',
    cite: `${VU} "Memory region description" / VHOST_USER_GET_MAX_MEM_SLOTS`,
  },
  SET_MEM_TABLE: {
    what: "the guest's memory: regions with their guest address, size and QEMU address, one fd each to mmap",
    cite: `${MSG}: VHOST_USER_SET_MEM_TABLE`,
  },
  ADD_MEM_REG: {
    what: 'one more region of guest memory, with its fd to mmap (CONFIGURE_MEM_SLOTS)',
    cite: `${MSG}: VHOST_USER_ADD_MEM_REG`,
  },
  REM_MEM_REG: { what: 'a region of guest memory goes away', cite: `${MSG}: VHOST_USER_REM_MEM_REG` },
  SET_VRING_NUM: {
    what: 'the size (number of descriptors) of one virtqueue',
    cite: `${MSG}: VHOST_USER_SET_VRING_NUM; virtio 1.2 §2.7`,
  },
  SET_VRING_ADDR: {
    what: 'where the descriptor table, available ring and used ring are (QEMU virtual addresses)',
    cite: `${MSG}: VHOST_USER_SET_VRING_ADDR; virtio 1.2 §2.7.5-2.7.8`,
  },
  SET_VRING_BASE: {
    what: 'the next available-ring index to process (where to resume)',
    cite: `${MSG}: VHOST_USER_SET_VRING_BASE`,
  },
  GET_VRING_BASE: {
    what: 'stop the ring and report the next available index: the backend must stop it',
    cite: `${VU} "Ring states"; VHOST_USER_GET_VRING_BASE`,
  },
  SET_VRING_KICK: {
    what: 'the eventfd the driver writes to kick this queue; the ring starts on its first kick',
    cite: `${VU} "Ring states"; VHOST_USER_SET_VRING_KICK`,
  },
  SET_VRING_CALL: {
    what: 'the eventfd the backend writes to interrupt the guest for this queue',
    cite: `${MSG}: VHOST_USER_SET_VRING_CALL`,
  },
  SET_VRING_ERR: {
    what: 'the eventfd for error notifications of this queue',
    cite: `${MSG}: VHOST_USER_SET_VRING_ERR`,
  },
  SET_VRING_ENABLE: {
    what: 'enable or disable one ring (with PROTOCOL_FEATURES, rings start disabled)',
    cite: `${VU} "Ring states"; VHOST_USER_SET_VRING_ENABLE`,
  },
  SEND_RARP: { what: 'announce the guest MAC after a migration (RARP)', cite: `${MSG}: VHOST_USER_SEND_RARP` },
  NET_SET_MTU: {
    what: 'the MTU QEMU advertises to the guest (host_mtu, VIRTIO_NET_F_MTU)',
    cite: `${MSG}: VHOST_USER_NET_SET_MTU; virtio 1.2 §5.1.4`,
  },
  SET_STATUS: {
    what: 'the virtio device status the driver set',
    cite: `${MSG}: VHOST_USER_SET_STATUS; virtio 1.2 §2.1`,
  },
  GET_STATUS: { what: 'the front-end reads the device status back', cite: `${MSG}: VHOST_USER_GET_STATUS` },
};

const EVENTS: Record<string, string> = {
  'vring started': `${VU} "Ring states": a ring starts when its kick fd becomes readable`,
  'vring broken': 'virtio 1.2 §2.7 (a driver violation): the queue stops, the others go on',
};

function payloadText(p: Record<string, unknown> | undefined): string {
  if (!p || Object.keys(p).length === 0) return '';
  return Object.entries(p)
    .map(
      ([k, v]) =>
        `${k}=${Array.isArray(v) ? `[${v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : x)).join(' ')}]` : typeof v === 'object' ? JSON.stringify(v) : v}`,
    )
    .join(' ');
}

/** The timeline as text lines. */
export function explain(records: TraceRecord[]): string[] {
  const out: string[] = [];
  const stamp = (r: TraceRecord) => `+${(r.t / 1000).toFixed(3).padStart(8)}s`;
  for (const r of records) {
    if (r.kind === 'session') {
      out.push(`${stamp(r)}  == session ${r.session} ${r.what}${r.reason ? ` (${r.reason})` : ''}`);
      continue;
    }
    if (r.kind === 'event') {
      const c = (r.changes?.[0] ?? {}) as Record<string, unknown>;
      out.push(
        `${stamp(r)}  ** ${r.what}${c.vring !== undefined ? ` (vring ${c.vring})` : ''}${c.reason ? `: ${c.reason}` : ''}${c.error ? `: ${c.error}` : ''}`,
      );
      const cite = EVENTS[r.what ?? ''];
      if (cite) out.push(`             [${cite}]`);
      continue;
    }
    const name = r.request ?? '?';
    if (r.kind === 'request') {
      const e = EXPLANATIONS[name];
      out.push(
        `${stamp(r)}  -> ${name}${r.flags?.needReply ? ' (need_reply)' : ''}${r.fds ? ` +${r.fds} fd` : ''}  ${payloadText(r.payload)}`,
      );
      out.push(`             ${e ? `${e.what}  [${e.cite}]` : `[${MSG}]`}`);
      for (const c of r.changes ?? []) {
        const { what, ...rest } = c;
        out.push(`             => ${what}${Object.keys(rest).length ? ` ${payloadText(rest)}` : ''}`);
      }
      if (r.error) out.push(`             !! ${r.error.code ?? 'error'}: ${r.error.message}`);
    } else {
      out.push(`${stamp(r)}  <- ${name} reply${r.ack ? ' (REPLY_ACK)' : ''}  ${payloadText(r.payload)}`);
      if (r.ack) out.push(`             [${VU} "REPLY_ACK": 0 for success, non-zero for failure]`);
    }
  }
  return out;
}

const QUEUE = (v: number) => `${v % 2 === 0 ? 'receiveq' : 'transmitq'}${v >> 1}`;

/**
 * A ring trace (`--trace-rings`) as a timeline: every step the device took, what it means,
 * the slots it touched and the spec section behind it (ring-narrator.ts).
 */
export function explainRings(records: ({ t: number; vring: number } & RingEvent)[], vring?: number): string[] {
  const out: string[] = [];
  let dropped = 0;
  for (const n of narrateTrace(records)) {
    const lost = (records[n.seq - 1] as { dropped?: number }).dropped;
    if (lost) {
      dropped += lost;
      out.push(`             (${lost} events dropped here: the trace fell behind; indices may jump)`);
    }
    if (vring !== undefined && n.vring !== vring) continue;
    const where = `vring ${n.vring} ${QUEUE(n.vring)}`;
    out.push(`+${n.t.toFixed(3).padStart(8)}s  ${where.padEnd(20)} ${n.event.ev.padEnd(8)} ${n.say}`);
    out.push(`             [${n.cite}]`);
  }
  if (dropped) out.push(`${dropped} events were dropped from this trace in all`);
  return out;
}

/** A trace file: a ring trace when its records are ring events (`ev`), else a message trace. */
export function explainFile(path: string, opts: { vring?: number | undefined } = {}): string[] {
  const lines = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim());
  // A trace still being written may end in half a line: that one is left out.
  const records = lines.flatMap((l, i) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch (err) {
      if (i === lines.length - 1) return [];
      throw new Error(`${path} line ${i + 1}: not a trace record (${(err as Error).message})`);
    }
  });
  if (records.length && typeof records[0]?.ev === 'string') {
    return explainRings(records as unknown as ({ t: number; vring: number } & RingEvent)[], opts.vring);
  }
  return explain(records as TraceRecord[]);
}
