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
import { featureMask, ProtocolFeature, VirtioFeature } from '../features.js';
import { OWN_REPLY, Request, type RequestName } from '../vhost-user/codec.js';

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
  /** A field (`field`: addr, len or flags) of a chain's head descriptor rewritten in guest memory, before the chain is completed. */
  'desc-rewrite': 10,
  /** The frame leaves `value` ms later (± `jitter` ms, uniform or normal `distribution`). */
  delay: 11,
  /** Frames leave no faster than `value` bit/s, one at a time (a queue of at most 1000). */
  rate: 12,
  /** The frame is held until `value` later frames (default 1) went past it, or for 1 s. */
  reorder: 13,
  /** Frames lost by a Gilbert-Elliott model (`gilbert`: p, r, h, k), stepped on every event. */
  'loss-gilbert': 14,
  /** Used elements are written but published `value` at a time (the batch includes this event's). */
  'used-burst': 15,
  /** `value` more interrupts after this event's burst, with nothing new behind them. */
  'notify-storm': 16,
  /** This event's burst interrupts the guest `value` ms late. */
  'notify-delay': 17,
  /** Packed rings: the used descriptor's AVAIL/USED flags are the other wrap counter's (split: nothing). */
  'used-wrap': 18,
} as const;
export type VringAction = keyof typeof VRING_ACTIONS;

/**
 * Actions on the vhost-user session (`on: "session"`), applied by the backend between the
 * connection and the handler table (src/faults/session-faults.ts). Codes continue the vring ones.
 */
export const SESSION_ACTIONS = {
  /** Close the connection `atMs` after the session started; the reconnect is served. */
  disconnect: 20,
  /** Refuse a named request with a REPLY_ACK failure, without applying it. */
  nack: 21,
  /** Answer a named request `value` ms late (nothing else is read meanwhile). */
  'delay-reply': 22,
  /** Remove bits (`value`: names or a hex mask) from GET_FEATURES or GET_PROTOCOL_FEATURES. */
  'offer-mask': 23,
  /** Close the connection when message number `value` (1-based, this session) arrives. */
  'close-at': 24,
  /** Offer features that put the guest in a receive mode: small, big or mergeable buffers. */
  'receive-mode': 25,
} as const;
export type SessionAction = keyof typeof SESSION_ACTIONS;
export type FaultAction = VringAction | SessionAction;
export const ACTION_CODES: Record<FaultAction, number> = { ...VRING_ACTIONS, ...SESSION_ACTIONS };

/**
 * Feature bits each receive mode removes from the offer (virtio 1.2 §5.1.6.3.1: without
 * MRG_RXBUF and without GUEST_TSO4/TSO6/UFO the driver posts small buffers; with a GUEST_TSO
 * bit but no MRG_RXBUF, big chained buffers; with MRG_RXBUF, mergeable ones). Linux also
 * counts GUEST_ECN (and GUEST_USO4/6) as "guest GSO" (virtnet_check_guest_gso), so small
 * removes those too.
 */
export const RECEIVE_MODES = {
  small: featureMask(
    VirtioFeature.NET_F_MRG_RXBUF,
    VirtioFeature.NET_F_GUEST_TSO4,
    VirtioFeature.NET_F_GUEST_TSO6,
    VirtioFeature.NET_F_GUEST_ECN,
    VirtioFeature.NET_F_GUEST_UFO,
    VirtioFeature.NET_F_GUEST_USO4,
    VirtioFeature.NET_F_GUEST_USO6,
  ),
  big: featureMask(VirtioFeature.NET_F_MRG_RXBUF),
  mergeable: 0n,
} as const;

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

/**
 * Field codes of a fault record (native/faults.h kField*): the header fields (0-6), then the
 * used element's and descriptor's fields, then the session's. Feature masks are written as hex
 * strings in the log (they do not fit a JSON number).
 */
export const FIELD_NAMES = [
  ...(Object.keys(HEADER_FIELDS) as HeaderField[]),
  'len',
  'id',
  'byte',
  'addr',
  'desc_flags',
  'features',
  'protocol_features',
  'message',
  'delay_us',
] as const;
export const FIELD = Object.fromEntries(FIELD_NAMES.map((n, i) => [n, i])) as Record<
  (typeof FIELD_NAMES)[number],
  number
>;
/** Descriptor fields desc-rewrite may set, with their field codes. */
export const DESC_FIELDS = { addr: FIELD.addr, len: FIELD.len, flags: FIELD.desc_flags } as const;

/** used-id modes (a number is an exact id). */
export const USED_ID_MODES = { 'out-of-range': 1, 'not-a-head': 2, repeat: 3 } as const;
/** used-len modes. */
export const USED_LEN_MODES = { '+': 1, '-': 2, '=': 3 } as const;

const TARGET = /^(?:(receiveq|transmitq)(\d+|\*)|\*|session)$/;
/** Every action a rule can take (vring, then session). */
export const ALL_ACTIONS = [...Object.keys(VRING_ACTIONS), ...Object.keys(SESSION_ACTIONS)] as [
  FaultAction,
  ...FaultAction[],
];

const ruleSchema = z
  .object({
    /** A name for the log, metrics and status (unique in the plan). */
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, "_", "." or "-"'),
    /** receiveqN, transmitqN, receiveq*, transmitq*, * or session. */
    on: z.string().regex(TARGET, 'must be receiveqN, transmitqN, receiveq*, transmitq*, * or session'),
    do: z.enum(ALL_ACTIONS),
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
    value: z.union([z.string(), z.number().int(), z.array(z.string())]).optional(),
    /** Session actions: the vhost-user request (nack, delay-reply, offer-mask), as the spec names it. */
    request: z.string().optional(),
    /** delay: ms of jitter around `value`, and its distribution (uniform by default). */
    jitter: z.number().min(0).max(60_000).optional(),
    distribution: z.enum(['uniform', 'normal']).optional(),
    /**
     * loss-gilbert: p (good to bad), r (bad to good), h (a frame gets through in the bad state,
     * default 0), k (in the good state, default 1), each a probability per event.
     */
    gilbert: z
      .object({
        p: z.number().min(0).max(1),
        r: z.number().min(0).max(1),
        h: z.number().min(0).max(1).optional(),
        k: z.number().min(0).max(1).optional(),
      })
      .strict()
      .optional(),
    /** header: the header field to set; desc-rewrite: the descriptor field (addr, len, flags). */
    field: z.string().optional(),
    /** used-burst: entries wait for the batch at most this long (a device that batches); none: until it is full. */
    holdMs: z.number().int().min(1).max(60_000).optional(),
    /** notify-storm: one interrupt every paceUs microseconds (each a write the front-end reads alone); none: all at once. */
    paceUs: z.number().int().min(1).max(1_000_000).optional(),
    /** Session actions: only in the Nth session served under the plan (1 = the first). */
    session: z.number().int().min(1).optional(),
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

/** When a rule fires: its triggers, as every compiled rule carries them (see `fires`). */
export interface Trigger {
  /** Index of the rule in the plan. */
  rule: number;
  every: number;
  after: number;
  /** 0: no limit. */
  count: number;
  /** Fires when draw(...) < threshold; 2^64 (as bigint) means always. */
  threshold: bigint;
  /** The window in ns from session start; atNs -1: no window. */
  atNs: bigint;
  untilNs: bigint;
}

/** One rule as one vring applies it: the native table row (native/faults.h FaultRule). */
export interface CompiledRule extends Trigger {
  vring: number;
  action: number;
  /** Action argument: used-len/used-id mode, header field. */
  mode: number;
  field: number;
  /** delay: ns; rate: bit/s; reorder: the gap; used-len/used-id/header/desc-rewrite: the value. */
  value: bigint;
  /** delay: jitter in ns (mode 0 uniform, 1 normal). */
  jitterNs: bigint;
  /** used-burst: how long written entries may wait for the batch (0: until it is full). */
  holdNs: bigint;
  /** notify-storm: one interrupt every paceNs (0: all at once). */
  paceNs: bigint;
  /** loss-gilbert thresholds (u64; a draw below p/r moves the state, a draw at or above h/k loses). */
  gP: bigint;
  gR: bigint;
  gH: bigint;
  gK: bigint;
}

/** One session rule (src/faults/session-faults.ts applies them). */
export interface CompiledSessionRule extends Trigger {
  action: SessionAction;
  /** nack, delay-reply, offer-mask, receive-mode: the request the rule applies to. */
  request?: RequestName;
  /** offer-mask, receive-mode: the bits removed. */
  mask: bigint;
  /** delay-reply: ms; close-at: the message number. */
  value: number;
  /** Only in this session served under the plan (0-based; undefined: every session). */
  session?: number;
}

export interface CompiledPlan {
  seed: number;
  plan: FaultPlan;
  rules: CompiledRule[];
  session: CompiledSessionRule[];
}

/** A rule's threshold that every draw passes (no probability asked): the draw is skipped. */
export const ALWAYS = 1n << 64n;

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

/** What a vring rule may not carry (arguments of other actions, directions it cannot act in). */
function vringRuleProblems(r: FaultRuleSpec, at: string): string[] {
  const problems: string[] = [];
  if (r.request !== undefined) problems.push(`${at}.request: only session actions name a request`);
  if (r.session !== undefined) problems.push(`${at}.session: only session actions take a session number`);
  if (r.holdMs !== undefined && r.do !== 'used-burst') problems.push(`${at}.holdMs: only used-burst takes it`);
  if (r.paceUs !== undefined && r.do !== 'notify-storm') problems.push(`${at}.paceUs: only notify-storm takes it`);
  if (r.do === 'withhold' && r.on.startsWith('receiveq'))
    problems.push(`${at}.do: withhold applies to transmitqs (a receiveq without buffers is just full)`);
  if ((r.jitter !== undefined || r.distribution !== undefined) && r.do !== 'delay')
    problems.push(`${at}.jitter: only delay takes jitter and distribution`);
  if (r.gilbert !== undefined && r.do !== 'loss-gilbert') problems.push(`${at}.gilbert: only loss-gilbert takes it`);
  if (r.field !== undefined && r.do !== 'header' && r.do !== 'desc-rewrite')
    problems.push(`${at}.field: only header and desc-rewrite take a field`);
  if ((r.do === 'header' || r.do === 'runt') && r.on.startsWith('transmitq'))
    problems.push(`${at}.do: ${r.do} changes what the guest receives: on receiveqs only`);
  return problems;
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
      if (!r.field || !(r.field in HEADER_FIELDS))
        return `header needs field (${Object.keys(HEADER_FIELDS).join(', ')})`;
      const [, size] = HEADER_FIELDS[r.field as HeaderField];
      if (typeof r.value !== 'number' || r.value < 0 || r.value >= 2 ** (8 * size))
        return `header ${r.field} takes a value 0..${2 ** (8 * size) - 1}`;
      return [0, FIELD[r.field as HeaderField], BigInt(r.value)];
    }
    case 'desc-rewrite': {
      if (!r.field || !(r.field in DESC_FIELDS)) return 'desc-rewrite needs field: addr, len or flags';
      const bits = r.field === 'addr' ? 64 : r.field === 'len' ? 32 : 16;
      const v =
        typeof r.value === 'number' && r.value >= 0
          ? BigInt(r.value)
          : typeof r.value === 'string' && /^0x[0-9a-f]{1,16}$/i.test(r.value)
            ? BigInt(r.value)
            : undefined;
      if (v === undefined || v >= 1n << BigInt(bits))
        return `desc-rewrite ${r.field} takes a value below 2^${bits} (a number or "0x..." hex)`;
      return [0, DESC_FIELDS[r.field as keyof typeof DESC_FIELDS], v];
    }
    case 'notify-drop':
      if (r.atMs === undefined) return 'notify-drop needs a window: atMs (and forMs)';
      return [0, 0, 0n];
    case 'delay':
      if (typeof r.value !== 'number' || r.value < 0 || r.value > 60_000) return 'delay takes value: ms (0..60000)';
      return [r.distribution === 'normal' ? 1 : 0, 0, BigInt(r.value) * 1_000_000n];
    case 'rate':
      if (typeof r.value !== 'number' || r.value < 1000) return 'rate takes value: bit/s (at least 1000)';
      return [0, 0, BigInt(r.value)];
    case 'reorder':
      if (r.value !== undefined && (typeof r.value !== 'number' || r.value < 1 || r.value > 1000))
        return 'reorder takes value: the gap in frames (1..1000, default 1)';
      return [0, 0, BigInt(r.value ?? 1)];
    case 'used-burst':
      if (typeof r.value !== 'number' || r.value < 2 || r.value > 32768)
        return 'used-burst takes value: the batch size (2..32768; at most the queue size applies)';
      return [0, 0, BigInt(r.value)];
    case 'notify-storm': {
      // All at once, the worker writes them in one go; paced, one per timer wake.
      const max = r.paceUs ? 1_000_000 : 10000;
      if (typeof r.value !== 'number' || r.value < 1 || r.value > max)
        return `notify-storm takes value: how many interrupts (1..${max}${r.paceUs ? ', paced' : '; up to 1000000 with paceUs'})`;
      return [0, 0, BigInt(r.value)];
    }
    case 'notify-delay':
      if (typeof r.value !== 'number' || r.value < 1 || r.value > 60_000)
        return 'notify-delay takes value: ms (1..60000)';
      return [0, 0, BigInt(r.value) * 1_000_000n];
    case 'loss-gilbert':
      if (!r.gilbert) return 'loss-gilbert needs gilbert: {p, r, h, k}';
      if (r.value !== undefined) return 'loss-gilbert takes no value (its model is in gilbert)';
      return [0, 0, 0n];
    default:
      if (r.value !== undefined || r.field !== undefined) return `${r.do} takes no value or field`;
      return [0, 0, 0n];
  }
}

function isSessionAction(a: FaultAction): a is SessionAction {
  return a in SESSION_ACTIONS;
}

/** A feature name as the spec spells it, with or without its NET_F_/F_ prefix. */
function bitOf(name: string, table: Record<string, bigint>): bigint | undefined {
  for (const k of [name, `NET_F_${name}`, `F_${name}`, `RING_F_${name}`]) if (k in table) return table[k];
  return undefined;
}

/** Session rule arguments: [request, mask, value] or a problem. */
function sessionArgsOf(r: FaultRuleSpec): [RequestName | undefined, bigint, number] | string {
  const known = (q: string | undefined): q is RequestName => q !== undefined && q in Request;
  switch (r.do) {
    case 'disconnect':
      if (r.atMs === undefined) return 'disconnect needs atMs (ms after the session started)';
      return [undefined, 0n, 0];
    case 'nack':
      if (!known(r.request)) return `nack needs request: a vhost-user request name (got ${r.request ?? 'none'})`;
      if (OWN_REPLY.has(r.request))
        return `${r.request} answers with its own reply, not a REPLY_ACK: it cannot be NACKed`;
      return [r.request, 0n, 0];
    case 'delay-reply':
      if (!known(r.request)) return `delay-reply needs request: a vhost-user request name (got ${r.request ?? 'none'})`;
      if (typeof r.value !== 'number' || r.value < 1 || r.value > 600_000)
        return 'delay-reply takes value: ms (1..600000)';
      return [r.request, 0n, r.value];
    case 'offer-mask': {
      const request = r.request ?? 'GET_FEATURES';
      if (request !== 'GET_FEATURES' && request !== 'GET_PROTOCOL_FEATURES')
        return 'offer-mask applies to request GET_FEATURES or GET_PROTOCOL_FEATURES';
      const table = request === 'GET_FEATURES' ? VirtioFeature : ProtocolFeature;
      if (typeof r.value === 'string' && /^0x[0-9a-f]{1,16}$/i.test(r.value)) return [request, BigInt(r.value), 0];
      if (!Array.isArray(r.value) || r.value.length === 0)
        return 'offer-mask takes value: a hex mask ("0x8000") or a list of feature names';
      const bits = r.value.map((n) => bitOf(n, table));
      const unknown = r.value.filter((_, i) => bits[i] === undefined);
      if (unknown.length)
        return `offer-mask: unknown ${request === 'GET_FEATURES' ? 'feature' : 'protocol feature'} ${unknown.join(', ')}`;
      return [request, featureMask(...(bits as bigint[])), 0];
    }
    case 'close-at':
      if (typeof r.value !== 'number' || r.value < 1) return 'close-at takes value: a message number (1 = the first)';
      return [undefined, 0n, r.value];
    case 'receive-mode':
      if (typeof r.value !== 'string' || !(r.value in RECEIVE_MODES))
        return `receive-mode takes value: ${Object.keys(RECEIVE_MODES).join(', ')}`;
      return ['GET_FEATURES', RECEIVE_MODES[r.value as keyof typeof RECEIVE_MODES], 0];
    default:
      return `${r.do} is not a session action`;
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
  const session: CompiledSessionRule[] = [];
  const names = new Set<string>();
  const ns = (ms: number | undefined) => (ms === undefined ? -1n : BigInt(ms) * 1_000_000n);
  const trigger = (r: FaultRuleSpec, i: number): Trigger => ({
    rule: i,
    every: r.every ?? 1,
    after: r.after ?? 0,
    count: r.count ?? 0,
    threshold: r.probability === undefined || r.probability >= 1 ? ALWAYS : thresholdOf(r.probability),
    atNs: ns(r.atMs),
    untilNs: r.atMs === undefined || r.forMs === undefined ? -1n : ns(r.atMs + r.forMs),
  });
  plan.rules.forEach((r, i) => {
    const at = `rules.${i}`;
    if (names.has(r.name)) problems.push(`${at}.name: '${r.name}' is used twice`);
    names.add(r.name);
    if (r.forMs !== undefined && r.atMs === undefined) problems.push(`${at}.forMs: needs atMs`);
    if (isSessionAction(r.do) !== (r.on === 'session')) {
      problems.push(
        isSessionAction(r.do)
          ? `${at}.on: ${r.do} is a session action: on must be "session"`
          : `${at}.on: ${r.do} acts on a vring: on must be a vring, not "session"`,
      );
      return;
    }
    if (r.request !== undefined && !(r.request in Request))
      problems.push(`${at}.request: unknown vhost-user request '${r.request}'`);
    if (isSessionAction(r.do)) {
      const args = sessionArgsOf(r);
      if (typeof args === 'string') {
        problems.push(`${at}.${/request/.test(args) ? 'request' : 'value'}: ${args}`);
        return;
      }
      session.push({
        ...trigger(r, i),
        action: r.do,
        ...(r.session !== undefined ? { session: r.session - 1 } : {}),
        ...(args[0] ? { request: args[0] } : {}),
        mask: args[1],
        value: args[2],
      });
      return;
    }
    const targets = vringsOf(r.on, vrings);
    if (!targets) problems.push(`${at}.on: ${r.on} does not exist (the device has ${vrings / 2} queue pairs)`);
    problems.push(...vringRuleProblems(r, at));
    const args = argsOf(r);
    if (typeof args === 'string') problems.push(`${at}.value: ${args}`);
    if (!targets || typeof args === 'string') return;
    for (const v of targets) {
      if (r.do === 'withhold' && v % 2 === 0) continue;
      if ((r.do === 'header' || r.do === 'runt') && v % 2 === 1) continue;
      rules.push({
        ...trigger(r, i),
        vring: v,
        action: VRING_ACTIONS[r.do as VringAction],
        mode: args[0],
        field: args[1],
        value: args[2],
        jitterNs: BigInt(Math.round((r.jitter ?? 0) * 1e6)),
        holdNs: BigInt(r.holdMs ?? 0) * 1_000_000n,
        paceNs: BigInt(r.paceUs ?? 0) * 1000n,
        gP: gilbertThreshold(r.gilbert?.p ?? 0),
        gR: gilbertThreshold(r.gilbert?.r ?? 0),
        gH: gilbertThreshold(r.gilbert?.h ?? 0),
        gK: gilbertThreshold(r.gilbert?.k ?? 1),
      });
    }
  });
  if (problems.length) throw refusal(source, problems);
  return { seed: plan.seed, plan, rules, session };
}

/** A Gilbert-Elliott probability as a u64 threshold (1 becomes 2^64-1: the native side holds u64). */
function gilbertThreshold(p: number): bigint {
  const t = thresholdOf(p);
  return t > M64 ? M64 : t;
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

/** The `vring` a session rule's draws use (no vring has this index). */
export const SESSION_STREAM = 0xffff;

/**
 * Whether a rule applies to event `event` (0-based) with `fired` firings so far, at `nowNs`
 * since session start: after, every, count and the window (native/faults.h Gated).
 */
export function gated(r: Trigger, event: bigint, fired: number, nowNs: bigint): boolean {
  if (event < BigInt(r.after)) return false;
  if ((event - BigInt(r.after) + 1n) % BigInt(r.every) !== 0n) return false;
  if (r.count && fired >= r.count) return false;
  if (r.atNs >= 0n && (nowNs < r.atNs || (r.untilNs >= 0n && nowNs >= r.untilNs))) return false;
  return true;
}

/** What a rule's trigger says for an event: gated, then its probability (native Fires). */
export function fires(
  seed: number,
  r: Trigger & { vring?: number },
  event: bigint,
  fired: number,
  nowNs: bigint,
): boolean {
  if (!gated(r, event, fired, nowNs)) return false;
  return r.threshold === ALWAYS || draw(seed, r.rule, r.vring ?? SESSION_STREAM, event) < r.threshold;
}
