/**
 * What the faults of one event make the device do (the twin of native/lies.h), and the lies
 * themselves as pure functions: which rule sets which lie (`tell`), a frame as a lie changes it
 * (`lieFrame`), a used element as told (`lieUsed`). The fault room (pair-faults.ts) applies
 * them and records each one.
 */
import {
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
  /** used-wrap: a packed ring's used descriptor flagged for the other wrap counter. */
  usedWrap: number;
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
  /** used-burst's holdMs, in ms (0: the batch waits until it is full). */
  burstHoldMs: number;
  storm: number;
  stormN: number;
  /** notify-storm's paceUs, in ms (0: all at once). */
  stormPaceMs: number;
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

export const noLies = (): Lies => ({
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
  usedWrap: -1,
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
  burstHoldMs: 0,
  storm: -1,
  stormN: 0,
  stormPaceMs: 0,
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
    l.usedWrap,
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

/** Whether the used element of the chain (or its descriptor) is lied about. */
export function aboutUsed(l: Lies): boolean {
  return l.usedId >= 0 || l.usedLen >= 0 || l.descRewrite >= 0 || l.usedWrap >= 0;
}

/** One rule that fired on event `e`, into the event's lies (native/pair_faults.cc Tell). */
export function tell(l: Lies, r: CompiledRule & { linkFreeMs: number }, e: bigint, seed: number): void {
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
      l.delayNs = delayNs(seed, r, e);
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
      l.burstHoldMs = Number(r.holdNs) / 1e6;
      break;
    case A['notify-storm']:
      l.storm = r.rule;
      l.stormN = Number(r.value);
      l.stormPaceMs = Number(r.paceNs) / 1e6;
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
      // Which bit of the last byte: the next draw of the same stream.
      l.corruptBit = Number(mix64(draw(seed, r.rule, r.vring, e)) & 7n);
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
    case A['used-wrap']:
      l.usedWrap = r.rule;
      break;
    case A['desc-rewrite']:
      l.descRewrite = r.rule;
      l.descField = r.field;
      l.descValue = r.value;
      break;
  }
}

/** A copy of `frame` with corrupt, header and runt applied; what it changed is noted in `l`. */
export function lieFrame(l: Lies, frame: Buffer, hdrLen: number): Buffer {
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

/** The header fields a frame lie may change that a header of `hdrLen` bytes has. */
export function headerFieldsIn(hdrLen: number): number[] {
  return HEADER.slice(0, 6).flatMap(([at, size], k) => (at + size <= hdrLen ? [k] : []));
}

/**
 * The used element told for chain `head` that had `len` bytes written, on a ring of `num`: id,
 * len, and (desc-rewrite) the descriptor field's old value. A desc-rewrite lands here too: the
 * head descriptor changes in guest memory before the chain is completed.
 */
export function lieUsed(
  l: Lies,
  ring: DescTable,
  num: number,
  head: number,
  len: number,
): { id: number; len: number; descOld: bigint } {
  let descOld = 0n;
  if (l.descRewrite >= 0) descOld = ring.rewriteDesc(head, DESC_FIELD_NAMES[l.descField] ?? 'len', l.descValue);
  let id = head;
  if (l.usedId >= 0) {
    if (l.idMode === USED_ID_MODES['out-of-range']) id = num;
    else if (l.idMode === USED_ID_MODES['not-a-head']) id = ring.nextOf(head);
    else if (l.idMode === USED_ID_MODES.repeat)
      id = head; // told twice: the caller fills again
    else id = Number(l.idValue);
  }
  let out = len;
  if (l.usedLen >= 0) {
    let v = BigInt(len);
    if (l.lenMode === USED_LEN_MODES['+']) v += l.lenValue;
    if (l.lenMode === USED_LEN_MODES['-']) v = l.lenValue > v ? 0n : v - l.lenValue;
    if (l.lenMode === USED_LEN_MODES['=']) v = l.lenValue;
    out = Number(v > 0xffffffffn ? 0xffffffffn : v);
  }
  return { id, len: out, descOld };
}
