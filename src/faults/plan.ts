/**
 * Fault plans: what the device does wrong, where, when, how often, seeded. A plan is data
 * (JSON), validated here with zod; a bad plan is refused with the path and reason of every
 * problem. `compilePlan` turns a valid plan into a flat rule table per vring, which the data
 * planes apply per event with no JS per packet on the C++ path (native/faults.h).
 *
 * Determinism: whether rule r fires on event e of vring v depends only on (seed, r, v, e): the
 * probability draw is a hash of those four numbers (`draw`), not a running generator, so
 * bursts, threads and timing never change a decision (time windows aside).
 */
import { z } from 'zod';
import { ConfigError, ErrorCode } from '../errors.js';

/** Actions on a vring, with the code the native table uses (native/faults.h FaultAction). */
export const VRING_ACTIONS = {
  /** The frame is not delivered (receiveq) or not sent to the host (transmitq). */
  drop: 1,
  /** The frame is delivered or sent twice. */
  duplicate: 2,
  /** One bit of the frame's last byte flipped (the virtio-net header left intact). */
  corrupt: 3,
  /** The used element's `len` changed: "+N", "-N" or "=N". */
  'used-len': 4,
  /** The used element's `id` changed: "out-of-range", "not-a-head", "repeat" or a number. */
  'used-id': 5,
  /** A transmitq chain is never completed (its used entry is not written). */
  withhold: 6,
  /** A virtio-net header field of a frame for the guest set to `value`. */
  header: 7,
  /** The guest receives fewer bytes than a virtio-net header and an Ethernet header. */
  runt: 8,
  /** No interrupt for this vring while the rule is active (a time window: atMs/forMs). */
  'notify-drop': 9,
} as const;
export type VringAction = keyof typeof VRING_ACTIONS;

/** Header fields `header` may set, with their byte offset and size (virtio 1.2 §5.1.6). */
export const HEADER_FIELDS = {
  flags: [0, 1],
  gso_type: [1, 1],
  hdr_len: [2, 2],
  gso_size: [4, 2],
  csum_start: [6, 2],
  csum_offset: [8, 2],
  num_buffers: [10, 2],
} as const;
export type HeaderField = keyof typeof HEADER_FIELDS;

/** used-id modes (a number is an exact id). */
export const USED_ID_MODES = { 'out-of-range': 1, 'not-a-head': 2, repeat: 3 } as const;
/** used-len modes. */
export const USED_LEN_MODES = { '+': 1, '-': 2, '=': 3 } as const;

const TARGET = /^(?:(receiveq|transmitq)(\d+|\*)|\*)$/;

const ruleSchema = z
  .object({
    /** A name for the log, metrics and status (unique in the plan). */
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, "_", "." or "-"'),
    /** receiveqN, transmitqN, receiveq*, transmitq* or *. */
    on: z.string().regex(TARGET, 'must be receiveqN, transmitqN, receiveq*, transmitq* or *'),
    do: z.enum(Object.keys(VRING_ACTIONS) as [VringAction, ...VringAction[]]),
    /** Each Nth event (after `after`). */
    every: z.number().int().min(1).optional(),
    /** Seeded probability per event. */
    probability: z.number().min(0).max(1).optional(),
    /** Skip the first N events. */
    after: z.number().int().min(0).optional(),
    /** At most N times (per vring the rule applies to). */
    count: z.number().int().min(1).optional(),
    /** A time window from the session's start (timing faults). */
    atMs: z.number().int().min(0).optional(),
    forMs: z.number().int().min(1).optional(),
    /** The action's argument (used-len "+N"/"-N"/"=N", used-id mode or number, header value). */
    value: z.union([z.string(), z.number().int()]).optional(),
    /** header: the field to set. */
    field: z.enum(Object.keys(HEADER_FIELDS) as [HeaderField, ...HeaderField[]]).optional(),
  })
  .strict();

export const planSchema = z
  .object({
    /** Every rule's decisions derive from this seed (a 32-bit whole number). */
    seed: z.number().int().min(0).max(0xffffffff),
    rules: z.array(ruleSchema).max(64),
  })
  .strict();

export type FaultRuleSpec = z.infer<typeof ruleSchema>;
export type FaultPlan = z.infer<typeof planSchema>;

/** One rule as one vring applies it: the native table row (native/faults.h FaultRule). */
export interface CompiledRule {
  /** Index of the rule in the plan. */
  rule: number;
  vring: number;
  action: number;
  every: number;
  after: number;
  /** 0: no limit. */
  count: number;
  /** Fires when draw(...) < threshold; 2^64 (as bigint) means always. */
  threshold: bigint;
  /** The window in ns from session start; atNs -1: no window. */
  atNs: bigint;
  untilNs: bigint;
  /** Action argument: used-len/used-id mode, header field. */
  mode: number;
  field: number;
  value: bigint;
}

export interface CompiledPlan {
  seed: number;
  plan: FaultPlan;
  rules: CompiledRule[];
}

const ALWAYS = 1n << 64n;

function refusal(source: string, problems: string[]): ConfigError {
  return new ConfigError(ErrorCode.FaultPlanInvalid, `invalid fault plan (${source})`, problems);
}

function vringsOf(on: string, vrings: number): number[] | undefined {
  if (on === '*') return Array.from({ length: vrings }, (_, i) => i);
  const m = TARGET.exec(on) as RegExpExecArray;
  const kind = m[1] === 'receiveq' ? 0 : 1;
  if (m[2] === '*') return Array.from({ length: vrings / 2 }, (_, p) => 2 * p + kind);
  const v = 2 * Number(m[2]) + kind;
  return v < vrings ? [v] : undefined;
}

/** Per-action argument checks; returns [mode, field, value] or a problem. */
function argsOf(r: FaultRuleSpec): [number, number, bigint] | string {
  switch (r.do) {
    case 'used-len': {
      const m = typeof r.value === 'string' ? /^([+\-=])(\d+)$/.exec(r.value) : null;
      if (!m) return 'used-len takes value "+N", "-N" or "=N"';
      return [USED_LEN_MODES[m[1] as '+' | '-' | '='], 0, BigInt(m[2] as string)];
    }
    case 'used-id':
      if (typeof r.value === 'number' && r.value >= 0 && r.value <= 0xffffffff) return [0, 0, BigInt(r.value)];
      if (typeof r.value === 'string' && r.value in USED_ID_MODES)
        return [USED_ID_MODES[r.value as keyof typeof USED_ID_MODES], 0, 0n];
      return 'used-id takes value "out-of-range", "not-a-head", "repeat" or an id (0..2^32-1)';
    case 'header': {
      if (!r.field) return `header needs field (${Object.keys(HEADER_FIELDS).join(', ')})`;
      const [, size] = HEADER_FIELDS[r.field];
      if (typeof r.value !== 'number' || r.value < 0 || r.value >= 2 ** (8 * size))
        return `header ${r.field} takes a value 0..${2 ** (8 * size) - 1}`;
      return [0, Object.keys(HEADER_FIELDS).indexOf(r.field), BigInt(r.value)];
    }
    case 'notify-drop':
      if (r.atMs === undefined) return 'notify-drop needs a window: atMs (and forMs)';
      return [0, 0, 0n];
    default:
      if (r.value !== undefined || r.field !== undefined) return `${r.do} takes no value or field`;
      return [0, 0, 0n];
  }
}

/**
 * Validates a plan for a device with `vrings` vrings and compiles it. Throws a ConfigError
 * (VUN_FAULT_PLAN_INVALID) naming every problem with its path; nothing is half-applied.
 */
export function compilePlan(input: unknown, vrings: number, source = 'plan'): CompiledPlan {
  const parsed = planSchema.safeParse(input);
  if (!parsed.success) {
    throw refusal(
      source,
      parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`),
    );
  }
  const plan = parsed.data;
  const problems: string[] = [];
  const rules: CompiledRule[] = [];
  const names = new Set<string>();
  plan.rules.forEach((r, i) => {
    const at = `rules.${i}`;
    if (names.has(r.name)) problems.push(`${at}.name: '${r.name}' is used twice`);
    names.add(r.name);
    const targets = vringsOf(r.on, vrings);
    if (!targets) problems.push(`${at}.on: ${r.on} does not exist (the device has ${vrings / 2} queue pairs)`);
    if (r.forMs !== undefined && r.atMs === undefined) problems.push(`${at}.forMs: needs atMs`);
    if (r.do === 'withhold' && r.on.startsWith('receiveq'))
      problems.push(`${at}.do: withhold applies to transmitqs (a receiveq without buffers is just full)`);
    if ((r.do === 'header' || r.do === 'runt') && r.on.startsWith('transmitq'))
      problems.push(`${at}.do: ${r.do} changes what the guest receives: on receiveqs only`);
    const args = argsOf(r);
    if (typeof args === 'string') problems.push(`${at}.value: ${args}`);
    if (!targets || typeof args === 'string') return;
    for (const v of targets) {
      if (r.do === 'withhold' && v % 2 === 0) continue;
      if ((r.do === 'header' || r.do === 'runt') && v % 2 === 1) continue;
      const ns = (ms: number | undefined) => (ms === undefined ? -1n : BigInt(ms) * 1_000_000n);
      rules.push({
        rule: i,
        vring: v,
        action: VRING_ACTIONS[r.do],
        every: r.every ?? 1,
        after: r.after ?? 0,
        count: r.count ?? 0,
        threshold: r.probability === undefined || r.probability >= 1 ? ALWAYS : thresholdOf(r.probability),
        atNs: ns(r.atMs),
        untilNs: r.atMs === undefined || r.forMs === undefined ? -1n : ns(r.atMs + r.forMs),
        mode: args[0],
        field: args[1],
        value: args[2],
      });
    }
  });
  if (problems.length) throw refusal(source, problems);
  return { seed: plan.seed, plan, rules };
}

/** p as a u64 threshold: a draw below it fires (p in 53-bit steps, as a double holds it). */
export function thresholdOf(p: number): bigint {
  return BigInt(Math.floor(p * 2 ** 53)) << 11n;
}

const M64 = (1n << 64n) - 1n;
/** splitmix64's finalizer: a bijection of u64 that scatters every input bit. */
export function mix64(x: bigint): bigint {
  x &= M64;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M64;
  return x ^ (x >> 31n);
}

/** The u64 draw of rule `rule` on event `event` of vring `vring` (native/faults.h Draw). */
export function draw(seed: number, rule: number, vring: number, event: bigint): bigint {
  let h = mix64(BigInt(seed) + 0x9e3779b97f4a7c15n * BigInt(rule + 1));
  h = mix64(h ^ BigInt(vring));
  return mix64(h ^ event);
}

/** What a rule's trigger says for event `event` (0-based) with `fired` firings so far. */
export function fires(seed: number, r: CompiledRule, event: bigint, fired: number, nowNs: bigint): boolean {
  if (event < BigInt(r.after)) return false;
  if ((event - BigInt(r.after) + 1n) % BigInt(r.every) !== 0n) return false;
  if (r.count && fired >= r.count) return false;
  if (r.atNs >= 0n && (nowNs < r.atNs || (r.untilNs >= 0n && nowNs >= r.untilNs))) return false;
  return r.threshold === ALWAYS || draw(seed, r.rule, r.vring, event) < r.threshold;
}
