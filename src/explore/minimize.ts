/**
 * Minimizing a plan that breaks a guest: the smallest plan that still does. Fewer rules first
 * (drop halves, then single rules, until no rule can go), then simpler arguments, one rule and
 * one field at a time: a trigger taken away (probability 1, every 1, after 0, no window), a
 * count of 1, values toward their boundary (the smallest the schema accepts, then halfway).
 * Each candidate is replayed (`reproduces`), the only judge; a candidate is kept when it does
 * (a plan with a rule fewer is given a second replay when the first misses).
 * Replays are the cost, so the number of them is bounded (`maxReplays`).
 */
import type { FaultPlan, FaultRuleSpec } from '../faults/plan.js';

export interface MinimizeOptions {
  /** At most this many replays (default 40); the best plan so far is returned when they run out. */
  maxReplays?: number;
  /** Told each candidate and whether it reproduced (progress, logs). */
  onStep?: (candidate: FaultPlan, reproduced: boolean, why: string) => void;
}

export interface Minimized {
  plan: FaultPlan;
  /** Every plan that reproduced, the starting one first and `plan` last (for a caller that confirms). */
  chain: FaultPlan[];
  replays: number;
  /** The replay budget ran out before every simplification was tried. */
  exhausted: boolean;
}

class OutOfReplays extends Error {}

/** The smallest numbers an action's value takes (plan.ts argsOf). */
const VALUE_FLOOR: Partial<Record<FaultRuleSpec['do'], number>> = {
  delay: 0,
  rate: 1000,
  reorder: 1,
  'used-burst': 2,
  'notify-storm': 1,
  'notify-delay': 1,
  'delay-reply': 1,
  'close-at': 1,
  header: 0,
  'desc-rewrite': 0,
  'used-id': 0,
};

/** Simpler versions of one rule, simplest first, each with what changed. */
export function simplerRules(r: FaultRuleSpec): [FaultRuleSpec, string][] {
  const out: [FaultRuleSpec, string][] = [];
  const without = (k: keyof FaultRuleSpec): FaultRuleSpec => {
    const c = { ...r };
    delete c[k];
    return c;
  };
  if (r.probability !== undefined) out.push([without('probability'), 'probability 1']);
  if (r.every !== undefined) out.push([without('every'), 'every 1']);
  if (r.after !== undefined) {
    out.push([without('after'), 'after 0']);
    if (r.after > 1) out.push([{ ...r, after: Math.floor(r.after / 2) }, `after ${Math.floor(r.after / 2)}`]);
  }
  if (r.count !== undefined && r.count > 1) {
    out.push([{ ...r, count: 1 }, 'count 1']);
    if (r.count > 2) out.push([{ ...r, count: Math.ceil(r.count / 2) }, `count ${Math.ceil(r.count / 2)}`]);
  }
  // A window: gone (notify-drop needs one: from 0 then), or starting at 0. A disconnect's atMs is its argument.
  if (r.atMs !== undefined && r.do !== 'disconnect') {
    if (r.do !== 'notify-drop') {
      const c = without('atMs');
      delete c.forMs;
      out.push([c, 'no window']);
    }
    if (r.atMs > 0) out.push([{ ...r, atMs: 0 }, 'window from 0']);
  }
  if (r.do === 'disconnect' && r.atMs !== undefined && r.atMs > 0) {
    out.push([{ ...r, atMs: 0 }, 'atMs 0']);
    out.push([{ ...r, atMs: Math.floor(r.atMs / 2) }, `atMs ${Math.floor(r.atMs / 2)}`]);
  }
  if (r.session !== undefined) out.push([without('session'), 'every session']);
  if (r.jitter !== undefined) out.push([without('jitter'), 'no jitter']);
  if (r.distribution !== undefined) out.push([without('distribution'), 'uniform']);
  if (r.holdMs !== undefined) out.push([without('holdMs'), 'no hold']);
  if (Array.isArray(r.value) && r.value.length > 1)
    r.value.forEach((v) => out.push([{ ...r, value: [v] }, `only ${v}`]));
  out.push(...simplerValues(r));
  return out;
}

/** A numeric value (or a used-len "+N") toward its floor: the floor itself, then halfway. */
function simplerValues(r: FaultRuleSpec): [FaultRuleSpec, string][] {
  const out: [FaultRuleSpec, string][] = [];
  const floor = VALUE_FLOOR[r.do];
  if (typeof r.value === 'number' && floor !== undefined && r.value > floor) {
    out.push([{ ...r, value: floor }, `value ${floor}`]);
    const half = Math.floor((r.value + floor) / 2);
    if (half > floor && half < r.value) out.push([{ ...r, value: half }, `value ${half}`]);
  }
  const m = typeof r.value === 'string' ? /^([+\-=])(\d+)$/.exec(r.value) : null;
  if (r.do === 'used-len' && m) {
    const n = Number(m[2]);
    if (n > 0) out.push([{ ...r, value: `${m[1]}0` }, `value ${m[1]}0`]);
    if (n > 1) out.push([{ ...r, value: `${m[1]}${Math.floor(n / 2)}` }, `value ${m[1]}${Math.floor(n / 2)}`]);
  }
  if (r.do === 'desc-rewrite' && typeof r.value === 'string' && /^0x/i.test(r.value)) {
    out.push([{ ...r, value: 0 }, 'value 0']);
  }
  if (r.paceUs !== undefined) {
    const c = { ...r };
    delete c.paceUs;
    // Unpaced, a storm is at most 10000.
    if (typeof c.value === 'number') c.value = Math.min(c.value, 10000);
    out.push([c, 'unpaced']);
  }
  return out;
}

/**
 * The smallest plan `reproduces` still says yes to, starting from `plan` (which must: the
 * caller saw it). Deterministic for a deterministic `reproduces`.
 */
export async function minimize(
  plan: FaultPlan,
  reproduces: (p: FaultPlan) => Promise<boolean>,
  o: MinimizeOptions = {},
): Promise<Minimized> {
  const max = o.maxReplays ?? 40;
  let replays = 0;
  let best = plan;
  const chain = [plan];
  const tried = new Set<string>();
  const attempt = async (candidate: FaultPlan, why: string, tries = 1): Promise<boolean> => {
    const key = JSON.stringify(candidate);
    if (tried.has(key)) return false;
    tried.add(key);
    let ok = false;
    for (let t = 0; t < tries && !ok; t++) {
      if (replays >= max) throw new OutOfReplays();
      replays++;
      ok = await reproduces(candidate);
      o.onStep?.(candidate, ok, t ? `${why} (again)` : why);
    }
    if (ok) {
      best = candidate;
      chain.push(candidate);
    }
    return ok;
  };
  try {
    await fewerRules(() => best, attempt);
    await simplerArguments(() => best, attempt);
    return { plan: best, chain, replays, exhausted: false };
  } catch (err) {
    if (err instanceof OutOfReplays) return { plan: best, chain, replays, exhausted: true };
    throw err;
  }
}

type Attempt = (candidate: FaultPlan, why: string, tries?: number) => Promise<boolean>;

/** A plan without a rule gets a second replay before the rule is kept: a reaction that depends on the guest's timing can miss once. */
const RULE_TRIES = 2;

/** Drops halves of the rules while one does it alone, then single rules, to a fixed point. */
async function fewerRules(best: () => FaultPlan, attempt: Attempt): Promise<void> {
  for (;;) {
    const rules = best().rules;
    if (rules.length <= 1) return;
    if (rules.length >= 4) {
      const mid = Math.ceil(rules.length / 2);
      if (await attempt({ ...best(), rules: rules.slice(0, mid) }, 'first half', RULE_TRIES)) continue;
      if (await attempt({ ...best(), rules: rules.slice(mid) }, 'second half', RULE_TRIES)) continue;
    }
    let dropped = false;
    for (let i = rules.length - 1; i >= 0 && !dropped; i--) {
      dropped = await attempt(
        { ...best(), rules: rules.filter((_, j) => j !== i) },
        `without ${rules[i]?.name}`,
        RULE_TRIES,
      );
    }
    if (!dropped) return;
  }
}

/** Each rule's arguments, simpler one at a time, until none of its simplifications reproduces. */
async function simplerArguments(best: () => FaultPlan, attempt: Attempt): Promise<void> {
  for (let i = 0; i < best().rules.length; i++) {
    let changed = true;
    while (changed) {
      changed = false;
      const rule = best().rules[i] as FaultRuleSpec;
      for (const [candidate, why] of simplerRules(rule)) {
        const rules = best().rules.map((r, j) => (j === i ? candidate : r));
        if (await attempt({ ...best(), rules }, `${rule.name}: ${why}`)) {
          changed = true;
          break;
        }
      }
    }
  }
}
