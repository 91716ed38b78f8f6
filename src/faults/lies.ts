/**
 * The fault plan in the TS data plane: the twin of native/queue_pair_faults.cc. Takes an
 * event's lies, applies them where the device acts (the frame, the used element, the interrupt)
 * and records each one, in the same order and with the same values as the C++ queue pair, so
 * both data planes write the same fault log for the same plan and operations.
 */
import { VringFaults } from './engine.js';
import type { FaultSink } from './log.js';
import {
  type CompiledPlan,
  type CompiledRule,
  draw,
  FIELD,
  HEADER_FIELDS,
  mix64,
  USED_ID_MODES,
  USED_LEN_MODES,
  VRING_ACTIONS,
} from './plan.js';

/** What the lies need of a ring's descriptor table (src/virtio/split-ring.ts). */
export interface DescTable {
  nextOf(head: number): number;
  rewriteDesc(i: number, field: 'addr' | 'len' | 'flags', v: bigint): bigint;
}
const DESC_FIELD_NAMES: Record<number, 'addr' | 'len' | 'flags'> = {
  [FIELD.addr]: 'addr',
  [FIELD.len]: 'len',
  [FIELD.desc_flags]: 'flags',
};

const A = VRING_ACTIONS;
const HEADER = Object.values(HEADER_FIELDS);

/** What the faults of one event make the device do (native/queue_pair.h Lies). */
export interface Lies {
  pending: boolean;
  event: bigint;
  drop: number;
  duplicate: number;
  corrupt: number;
  withhold: number;
  runt: number;
  usedLen: number;
  usedId: number;
  descRewrite: number;
  descField: number;
  descValue: bigint;
  /** drop or loss-gilbert (the action a drop is logged as). */
  dropAction: number;
  delay: number;
  rate: number;
  reorder: number;
  delayNs: bigint;
  /** rate: the rule whose link state shapes the frame. */
  rateRule: { value: bigint; linkFreeMs: number } | undefined;
  gap: number;
  usedBurst: number;
  burstN: number;
  storm: number;
  stormN: number;
  notifyDelay: number;
  notifyDelayNs: bigint;
  corruptBit: number;
  lenMode: number;
  idMode: number;
  lenValue: bigint;
  idValue: bigint;
  header: number[];
  headerValue: bigint[];
  headerOld: bigint[];
  byteOld: number;
  byteNew: number;
  runtFrom: number;
  runtTo: number;
}

const noLies = (): Lies => ({
  pending: false,
  event: 0n,
  drop: -1,
  duplicate: -1,
  corrupt: -1,
  withhold: -1,
  runt: -1,
  usedLen: -1,
  usedId: -1,
  descRewrite: -1,
  descField: 0,
  descValue: 0n,
  dropAction: VRING_ACTIONS.drop,
  delay: -1,
  rate: -1,
  reorder: -1,
  delayNs: 0n,
  rateRule: undefined,
  gap: 0,
  usedBurst: -1,
  burstN: 0,
  storm: -1,
  stormN: 0,
  notifyDelay: -1,
  notifyDelayNs: 0n,
  corruptBit: 0,
  lenMode: 0,
  idMode: 0,
  lenValue: 0n,
  idValue: 0n,
  header: [-1, -1, -1, -1, -1, -1, -1],
  headerValue: [0n, 0n, 0n, 0n, 0n, 0n, 0n],
  headerOld: [0n, 0n, 0n, 0n, 0n, 0n, 0n],
  byteOld: 0,
  byteNew: 0,
  runtFrom: 0,
  runtTo: 0,
});

/** used-id "repeat": the chain is completed twice (a second used element, same id). */
export function twice(l: Lies): boolean {
  return l.usedId >= 0 && l.idMode === USED_ID_MODES.repeat;
}

/** The rules behind an event's lies, each once, in native/queue_pair.h Lies::Rules's order. */
export function rulesOf(l: Lies): number[] {
  const all = [
    l.drop,
    l.duplicate,
    l.corrupt,
    l.runt,
    ...l.header,
    l.usedLen,
    l.usedId,
    l.descRewrite,
    l.withhold,
    l.delay,
    l.rate,
    l.reorder,
    l.usedBurst,
    l.storm,
    l.notifyDelay,
  ];
  return [...new Set(all.filter((r) => r >= 0))].slice(0, 8);
}

/** A capture comment's fault note: each rule as `name (action)`. */
export function faultNote(plan: { rules: { name: string; do: string }[] }, rules: number[]): string | undefined {
  if (!rules.length) return undefined;
  return rules.map((r) => `${plan.rules[r]?.name ?? `rule${r}`} (${plan.rules[r]?.do ?? '?'})`).join(', ');
}

/** delay, rate, reorder: the frame is held and leaves later. */
export function holds(l: Lies): boolean {
  return l.delay >= 0 || l.rate >= 0 || l.reorder >= 0;
}

/**
 * delay: value ns plus jitter from the rule's stream, uniform in [-j, +j) or normal (Irwin-Hall:
 * 12 uniforms less 6), floored: only adds and multiplies of doubles, so native/queue_pair_faults.cc
 * DelayNs gets the same nanoseconds.
 */
export function delayNs(seed: number, r: CompiledRule, e: bigint): bigint {
  let d = Number(r.value);
  if (r.jitterNs) {
    const base = draw(seed, r.rule, r.vring, e);
    const unit = (x: bigint) => Number(x >> 11n) * (1 / 9007199254740992);
    let z: number;
    if (r.mode === 1) {
      z = -6;
      for (let i = 1n; i <= 12n; i++) z += unit(mix64(base ^ i));
    } else z = 2 * unit(mix64(base)) - 1;
    d += z * Number(r.jitterNs);
  }
  return d <= 0 ? 0n : BigInt(Math.floor(d));
}

/** Whether the frame itself changes (num_buffers is told after delivery). */
export function changesFrame(l: Lies): boolean {
  return l.corrupt >= 0 || l.runt >= 0 || l.header.slice(0, 6).some((r) => r >= 0);
}

/** The lies of one device (all its vrings) for one session. */
export class Liar {
  private readonly faults: VringFaults[];
  /** Per receiveq: the lies decided for the frame in progress. */
  readonly toGuest = new Map<number, Lies>();

  constructor(
    readonly plan: CompiledPlan,
    vrings: number,
    private readonly sink: FaultSink | undefined,
    private readonly startMs: number,
    /** Queue sizes, for used-id "out-of-range" and "not-a-head". */
    private readonly queueSize: (vring: number) => number,
  ) {
    this.faults = VringFaults.forVrings(plan, vrings, startMs);
  }

  /** The vring's rules, or undefined when the plan has none for it. */
  of(vring: number): VringFaults | undefined {
    const f = this.faults[vring];
    return f?.any ? f : undefined;
  }

  record(
    vring: number,
    rule: number,
    action: number,
    event: bigint,
    o: { field?: number; ringIdx?: number; old?: bigint; new?: bigint } = {},
  ): void {
    this.sink?.record({ rule, action, vring, event, ...o, t: performance.now() - this.startMs });
  }

  take(f: VringFaults, vring: number): Lies {
    const l = noLies();
    l.pending = true;
    f.next((r, e) => {
      l.event = e;
      switch (r.action) {
        case A.drop:
          l.drop = r.rule;
          break;
        case A['loss-gilbert']:
          l.drop = r.rule;
          l.dropAction = A['loss-gilbert'];
          break;
        case A.delay:
          l.delay = r.rule;
          l.delayNs = delayNs(this.plan.seed, r, e);
          break;
        case A.rate:
          l.rate = r.rule;
          l.rateRule = r;
          break;
        case A.reorder:
          l.reorder = r.rule;
          l.gap = Number(r.value);
          break;
        case A['used-burst']:
          l.usedBurst = r.rule;
          l.burstN = Number(r.value);
          break;
        case A['notify-storm']:
          l.storm = r.rule;
          l.stormN = Number(r.value);
          break;
        case A['notify-delay']:
          l.notifyDelay = r.rule;
          l.notifyDelayNs = r.value;
          break;
        case A.duplicate:
          l.duplicate = r.rule;
          break;
        case A.corrupt:
          l.corrupt = r.rule;
          l.corruptBit = Number(mix64(draw(this.plan.seed, r.rule, vring, e)) & 7n);
          break;
        case A.withhold:
          l.withhold = r.rule;
          break;
        case A.runt:
          l.runt = r.rule;
          break;
        case A['used-len']:
          l.usedLen = r.rule;
          l.lenMode = r.mode;
          l.lenValue = r.value;
          break;
        case A['used-id']:
          l.usedId = r.rule;
          l.idMode = r.mode;
          l.idValue = r.value;
          break;
        case A.header:
          l.header[r.field] = r.rule;
          l.headerValue[r.field] = r.value;
          break;
        case A['desc-rewrite']:
          l.descRewrite = r.rule;
          l.descField = r.field;
          l.descValue = r.value;
          break;
      }
    });
    if (l.drop >= 0) this.record(vring, l.drop, l.dropAction, l.event);
    return l;
  }

  /** A transmitq chain never completed: the head the device keeps back from the guest. */
  recordWithheld(vring: number, l: Lies, head: number): void {
    this.record(vring, l.withhold, A.withhold, l.event, {
      field: FIELD.id,
      ringIdx: head,
      old: BigInt(head),
      new: 0n,
    });
  }

  /** A copy of `frame` with corrupt, header and runt applied (recorded later: recordFrame). */
  lieFrame(l: Lies, frame: Buffer, hdrLen: number): Buffer {
    const f = Buffer.from(frame);
    HEADER.slice(0, 6).forEach(([at, size], k) => {
      if (l.header[k] === undefined || (l.header[k] as number) < 0 || at + size > hdrLen) return;
      l.headerOld[k] = BigInt(size === 1 ? (f[at] as number) : f.readUInt16LE(at));
      if (size === 1) f[at] = Number(l.headerValue[k]);
      else f.writeUInt16LE(Number(l.headerValue[k]), at);
    });
    if (l.corrupt >= 0 && f.length > hdrLen) {
      l.byteOld = f[f.length - 1] as number;
      l.byteNew = l.byteOld ^ (1 << l.corruptBit);
      f[f.length - 1] = l.byteNew;
    }
    l.runtFrom = l.runtTo = f.length;
    if (l.runt >= 0 && f.length > hdrLen + 6) {
      l.runtTo = hdrLen + 6; // short of an Ethernet header (14)
      return f.subarray(0, l.runtTo);
    }
    return f;
  }

  recordFrame(vring: number, l: Lies, hdrLen: number): void {
    HEADER.slice(0, 6).forEach(([at, size], k) => {
      const rule = l.header[k] as number;
      if (rule >= 0 && at + size <= hdrLen)
        this.record(vring, rule, A.header, l.event, { field: k, old: l.headerOld[k], new: l.headerValue[k] });
    });
    if (l.corrupt >= 0)
      this.record(vring, l.corrupt, A.corrupt, l.event, {
        field: FIELD.byte,
        old: BigInt(l.byteOld),
        new: BigInt(l.byteNew),
      });
    if (l.runt >= 0)
      this.record(vring, l.runt, A.runt, l.event, { field: FIELD.len, old: BigInt(l.runtFrom), new: BigInt(l.runtTo) });
  }

  /** Whether the used element of the chain (or its descriptor) is lied about. */
  static aboutUsed(l: Lies): boolean {
    return l.usedId >= 0 || l.usedLen >= 0 || l.descRewrite >= 0;
  }

  /**
   * The used element told for chain `head` that had `len` bytes written: [id, len]. A
   * desc-rewrite lands here too: the head descriptor changes in guest memory before the chain
   * is completed.
   */
  lieUsed(vring: number, l: Lies, head: number, len: number, ring: DescTable): [number, number] {
    let id = head;
    let out = len;
    if (l.descRewrite >= 0) {
      const old = ring.rewriteDesc(head, DESC_FIELD_NAMES[l.descField] ?? 'len', l.descValue);
      this.record(vring, l.descRewrite, A['desc-rewrite'], l.event, {
        field: l.descField,
        ringIdx: head,
        old,
        new: l.descValue,
      });
    }
    if (l.usedId >= 0) {
      const num = this.queueSize(vring);
      if (l.idMode === USED_ID_MODES['out-of-range']) id = num;
      else if (l.idMode === USED_ID_MODES['not-a-head']) id = ring.nextOf(head);
      else if (l.idMode === USED_ID_MODES.repeat)
        id = head; // told twice: the caller fills again
      else id = Number(l.idValue);
      this.record(vring, l.usedId, A['used-id'], l.event, {
        field: FIELD.id,
        ringIdx: head,
        old: BigInt(head),
        new: BigInt(id),
      });
    }
    if (l.usedLen >= 0) {
      let v = BigInt(len);
      if (l.lenMode === USED_LEN_MODES['+']) v += l.lenValue;
      if (l.lenMode === USED_LEN_MODES['-']) v = l.lenValue > v ? 0n : v - l.lenValue;
      if (l.lenMode === USED_LEN_MODES['=']) v = l.lenValue;
      out = Number(v > 0xffffffffn ? 0xffffffffn : v);
      this.record(vring, l.usedLen, A['used-len'], l.event, {
        field: FIELD.len,
        ringIdx: head,
        old: BigInt(len),
        new: BigInt(out),
      });
    }
    return [id, out];
  }

  /** The notification lies of one event, logged (native/queue_pair_faults.cc TakeNotifyLies). */
  recordNotify(vring: number, l: Lies, head: number): void {
    if (l.usedBurst >= 0) this.record(vring, l.usedBurst, A['used-burst'], l.event, { ringIdx: head });
    if (l.storm >= 0) this.record(vring, l.storm, A['notify-storm'], l.event);
    if (l.notifyDelay >= 0)
      this.record(vring, l.notifyDelay, A['notify-delay'], l.event, {
        field: FIELD.delay_us,
        old: 0n,
        new: l.notifyDelayNs / 1000n,
      });
  }

  /** A held frame's faults, logged when it is held (native/queue_pair_hold.cc HoldFrame). */
  recordHeld(vring: number, l: Lies): void {
    if (l.delay >= 0)
      this.record(vring, l.delay, A.delay, l.event, { field: FIELD.delay_us, old: 0n, new: l.delayNs / 1000n });
    if (l.rate >= 0) this.record(vring, l.rate, A.rate, l.event);
    if (l.reorder >= 0) this.record(vring, l.reorder, A.reorder, l.event);
  }

  /** notify-drop: whether an interrupt the ring decided to send is held back now. */
  notifyHeldBack(vring: number): boolean {
    const f = this.of(vring);
    const r = f?.notifyDropped();
    if (!f || !r) return false;
    f.firedOutsideEvents(r);
    this.record(vring, r.rule, A['notify-drop'], f.events);
    return true;
  }
}
