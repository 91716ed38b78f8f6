/**
 * The explorer's plan generator: plan number `index` of an exploration seeded `seed` is drawn
 * from a generator seeded by the two (so a run resumes, and any plan is regenerated, from its
 * number alone). Each plan has 1-5 rules over the whole action vocabulary (vring and session
 * actions), actions weighted toward the lies a driver must guard against, every argument and
 * trigger drawn from the range the plan schema accepts (plan.ts), with the explorer's caps on
 * how long one fault may hold the guest (EXPLORE_CAPS), so one plan fits in a round.
 */
import {
  DESC_FIELDS,
  HEADER_FIELDS,
  type FaultPlan,
  type FaultRuleSpec,
  RECEIVE_MODES,
  SESSION_ACTIONS,
  type SessionAction,
  USED_ID_MODES,
  type VringAction,
} from '../faults/plan.js';
import { ProtocolFeature, VirtioFeature } from '../features.js';
import { OWN_REPLY, Request, type RequestName } from '../vhost-user/codec.js';

export type Action = VringAction | SessionAction;

/**
 * How often each action is drawn (relative). Lies about the ring (ids, lengths, descriptors,
 * headers, wrap counters) weigh most: a driver's guards are what is searched; impairments a
 * network does anyway (delay, rate, loss) and session faults (which need a reconnect to act)
 * weigh less.
 */
export const WEIGHTS: Record<Action, number> = {
  'used-id': 10,
  'used-len': 10,
  'desc-rewrite': 8,
  header: 8,
  runt: 5,
  'used-wrap': 5,
  withhold: 5,
  corrupt: 4,
  duplicate: 4,
  drop: 4,
  'used-burst': 4,
  'notify-storm': 4,
  'notify-drop': 4,
  'notify-delay': 3,
  delay: 2,
  rate: 2,
  reorder: 2,
  'loss-gilbert': 2,
  disconnect: 3,
  'close-at': 2,
  nack: 2,
  'delay-reply': 2,
  'offer-mask': 2,
  'receive-mode': 2,
};

/** The explorer's caps, below the schema's limits: one fault holds a guest for seconds, not minutes. */
export const EXPLORE_CAPS = {
  /** delay, notify-delay, delay-reply (ms). */
  delayMs: 2000,
  /** A window's start and length (ms after the plan is loaded). */
  windowMs: 6000,
  /** A paced notify-storm lasts at most this long (ms). */
  stormMs: 3000,
};

/** A small seeded generator (mulberry32): 32-bit state, uniform in [0, 1). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
  /** A whole number in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** A whole number in [lo, hi], log-uniform (small values as likely per decade as large ones). */
  logInt(lo: number, hi: number): number {
    const a = Math.log(Math.max(lo, 1));
    const b = Math.log(hi + 1);
    return Math.min(hi, Math.max(lo, Math.floor(Math.exp(a + this.next() * (b - a)))));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }
  weighted<T extends string>(w: Record<T, number>): T {
    const keys = Object.keys(w) as T[];
    let x = this.next() * keys.reduce((s, k) => s + w[k], 0);
    for (const k of keys) {
      x -= w[k];
      if (x < 0) return k;
    }
    return keys[keys.length - 1] as T;
  }
}

/** The generator's seed for plan `index` of an exploration seeded `seed`. */
export function planSeed(seed: number, index: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ index;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

const REQUESTS = Object.keys(Request) as RequestName[];
const NACKABLE = REQUESTS.filter((r) => !OWN_REPLY.has(r));
const FEATURE_NAMES = Object.keys(VirtioFeature);
const PROTOCOL_NAMES = Object.keys(ProtocolFeature);

/** Triggers a rule may carry (any action): after, every, probability, count, a window. */
function triggers(g: Rng, needsWindow: boolean): Partial<FaultRuleSpec> {
  const t: Partial<FaultRuleSpec> = {};
  if (g.chance(0.5)) t.after = g.logInt(0, 500);
  if (g.chance(0.25)) t.every = g.logInt(1, 64);
  if (g.chance(0.4)) t.probability = Math.round(g.next() * 1000) / 1000 || 0.001;
  if (g.chance(0.5)) t.count = g.logInt(1, 100);
  if (needsWindow || g.chance(0.15)) {
    t.atMs = g.int(0, EXPLORE_CAPS.windowMs);
    if (g.chance(0.7)) t.forMs = g.int(1, EXPLORE_CAPS.windowMs);
  }
  return t;
}

/** Where a vring action may act: receive-side actions on receiveqs, withhold on transmitqs. */
function targetOf(g: Rng, a: VringAction): string {
  if (a === 'header' || a === 'runt') return g.pick(['receiveq0', 'receiveq*', '*']);
  if (a === 'withhold') return g.pick(['transmitq0', 'transmitq*', '*']);
  return g.pick(['receiveq0', 'transmitq0', 'receiveq*', 'transmitq*', '*']);
}

/** A vring action's own arguments, each from the range plan.ts accepts. */
function vringArgs(g: Rng, a: VringAction): Partial<FaultRuleSpec> {
  switch (a) {
    case 'used-len':
      return {
        value: `${g.pick(['+', '-', '='])}${g.chance(0.5) ? g.logInt(0, 65536) : g.pick([0, 1, 11, 12, 13, 14])}`,
      };
    case 'used-id':
      return { value: g.chance(0.7) ? g.pick(Object.keys(USED_ID_MODES)) : g.logInt(0, 0xffff) };
    case 'header': {
      const field = g.pick(Object.keys(HEADER_FIELDS)) as keyof typeof HEADER_FIELDS;
      const max = 2 ** (8 * HEADER_FIELDS[field][1]) - 1;
      return { field, value: g.chance(0.3) ? g.pick([0, 1, max]) : g.logInt(0, max) };
    }
    case 'desc-rewrite': {
      const field = g.pick(Object.keys(DESC_FIELDS)) as keyof typeof DESC_FIELDS;
      if (field === 'addr') return { field, value: g.chance(0.5) ? 0 : `0x${g.int(0, 0xffffffff).toString(16)}000` };
      if (field === 'len')
        return { field, value: g.chance(0.3) ? g.pick([0, 1, 0xffffffff]) : g.logInt(0, 0xffffffff) };
      return { field, value: g.int(0, 0xffff) };
    }
    case 'delay':
      return {
        value: g.logInt(0, EXPLORE_CAPS.delayMs),
        ...(g.chance(0.4) ? { jitter: g.logInt(0, 200) } : {}),
        ...(g.chance(0.3) ? { distribution: g.pick(['uniform', 'normal'] as const) } : {}),
      };
    case 'rate':
      return { value: g.logInt(1000, 1_000_000_000) };
    case 'reorder':
      return g.chance(0.3) ? {} : { value: g.logInt(1, 1000) };
    case 'loss-gilbert':
      return {
        gilbert: {
          p: Math.round(g.next() * 100) / 100,
          r: Math.round(g.next() * 100) / 100,
          ...(g.chance(0.5) ? { h: Math.round(g.next() * 100) / 100 } : {}),
          ...(g.chance(0.5) ? { k: Math.round(g.next() * 100) / 100 } : {}),
        },
      };
    case 'used-burst':
      return { value: g.logInt(2, 32768), ...(g.chance(0.5) ? { holdMs: g.logInt(1, EXPLORE_CAPS.delayMs) } : {}) };
    case 'notify-storm': {
      if (g.chance(0.6)) return { value: g.logInt(1, 10000) };
      const paceUs = g.logInt(1, 100_000);
      return {
        paceUs,
        value: g.logInt(1, Math.min(1_000_000, Math.max(1, Math.floor((EXPLORE_CAPS.stormMs * 1000) / paceUs)))),
      };
    }
    case 'notify-delay':
      return { value: g.logInt(1, EXPLORE_CAPS.delayMs) };
    default:
      return {};
  }
}

/** A session action's own arguments. */
function sessionArgs(g: Rng, a: SessionAction): Partial<FaultRuleSpec> {
  const session = g.chance(0.3) ? { session: g.int(1, 3) } : {};
  switch (a) {
    case 'disconnect':
      return { atMs: g.int(0, EXPLORE_CAPS.windowMs), ...session };
    case 'nack':
      return { request: g.pick(NACKABLE), ...session };
    case 'delay-reply':
      return { request: g.pick(REQUESTS), value: g.logInt(1, EXPLORE_CAPS.delayMs), ...session };
    case 'offer-mask': {
      const features = g.chance(0.7);
      const names = features ? FEATURE_NAMES : PROTOCOL_NAMES;
      const value = Array.from({ length: g.int(1, 3) }, () => g.pick(names));
      return { request: features ? 'GET_FEATURES' : 'GET_PROTOCOL_FEATURES', value: [...new Set(value)], ...session };
    }
    case 'close-at':
      return { value: g.logInt(1, 80), ...session };
    case 'receive-mode':
      return { value: g.pick(Object.keys(RECEIVE_MODES)), ...session };
    default:
      return session;
  }
}

/** One rule named `name`. */
export function generateRule(g: Rng, name: string): FaultRuleSpec {
  const a = g.weighted(WEIGHTS);
  if (a in SESSION_ACTIONS) {
    const s = a as SessionAction;
    const t = triggers(g, false);
    // A disconnect's atMs is its own argument (when, in the session), not a window.
    if (s === 'disconnect') delete t.forMs;
    return { name, on: 'session', do: s, ...t, ...sessionArgs(g, s) };
  }
  const v = a as VringAction;
  return { name, on: targetOf(g, v), do: v, ...triggers(g, v === 'notify-drop'), ...vringArgs(g, v) };
}

/** Plan `index` of an exploration seeded `seed`: 1-5 rules. */
export function generatePlan(seed: number, index: number): FaultPlan {
  const g = new Rng(planSeed(seed, index));
  const n = g.pick([1, 1, 2, 2, 2, 3, 3, 4, 5]);
  return { seed: g.int(0, 0xffffffff), rules: Array.from({ length: n }, (_, i) => generateRule(g, `r${i + 1}`)) };
}

/** Every action the generator can draw: the plan schema's whole vocabulary. */
export { ALL_ACTIONS as ACTIONS } from '../faults/plan.js';
