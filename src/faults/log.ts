/**
 * The fault log: one JSON line per injected fault (`--fault-log FILE|-`), and the per-rule
 * counts /status and /metrics show. Both data planes report through `FaultSink.record`: the C++
 * one from its observation records (decoded in src/trace/observe.ts), the TS one directly.
 *
 * A line: {"seq","rule","do","vring","event","ringIdx","field","old","new","t"}. `seq` counts
 * the faults of that vring (1, 2, ...), so a line depends only on the plan and the operations,
 * never on how the vrings' work interleaved; `t` is milliseconds since the session started.
 */
import { EventEmitter } from 'node:events';
import { closeTraceOutput, openTraceOutput, type TraceOutput } from '../util/output.js';
import type { RingEvent } from '../virtio/ring-events.js';
import { ACTION_CODES, type CompiledPlan, type FaultAction, type FaultPlan, FIELD_NAMES } from './plan.js';

export { FIELD_NAMES };

const HEX_FIELDS = new Set(['features', 'protocol_features']);
const ACTION_NAMES = Object.fromEntries(Object.entries(ACTION_CODES).map(([k, v]) => [v, k])) as Record<
  number,
  FaultAction
>;
/** The `vring` of a session fault (its line says "session"). */
export const SESSION_VRING = -1;

/** One injected fault, as both data planes report it. */
export interface FaultEvent {
  /** Index of the rule in the plan. */
  rule: number;
  action: number;
  vring: number;
  /** The event number on that vring (0-based) the rule fired on. */
  event: bigint;
  /** The descriptor head the fault touched, when there is one. */
  ringIdx?: number;
  /** FIELD_NAMES index, when the fault changed a value. */
  field?: number;
  old?: bigint;
  new?: bigint;
  /** Session faults: the request the fault acted on. */
  request?: string;
  /** Milliseconds since the session started. */
  t: number;
}

export interface FaultLine {
  seq: number;
  rule: string;
  do: FaultAction;
  vring: number | 'session';
  event: number;
  ringIdx?: number;
  request?: string;
  field?: string;
  old?: number | string;
  new?: number | string;
  t: number;
}

export interface FaultLogEvents {
  /** Every fault line, as written (subscribers of the programmatic API, tests). */
  line: [FaultLine];
}

/** A fault as a ring trace event, next to the ring steps it changed. */
export function faultEvent(plan: CompiledPlan | undefined, e: Omit<FaultEvent, 't'>): RingEvent {
  const field = e.field === undefined ? undefined : FIELD_NAMES[e.field];
  return {
    ev: 'fault',
    rule: plan?.plan.rules[e.rule]?.name ?? `rule${e.rule}`,
    do: ACTION_NAMES[e.action] ?? String(e.action),
    event: Number(e.event),
    ...(e.ringIdx !== undefined ? { ringIdx: e.ringIdx } : {}),
    ...(field !== undefined ? { field } : {}),
    ...(e.old !== undefined ? { old: Number(e.old) } : {}),
    ...(e.new !== undefined ? { new: Number(e.new) } : {}),
  };
}

/** Receives the faults a data plane injects. */
export interface FaultSink {
  record(e: FaultEvent): void;
}

/**
 * Turns fault events into log lines and counts; writes them when given an output. One per
 * process: `use(plan)` starts counting for a plan (at load, and for each new session); the
 * totals by rule, action and vring only grow (they feed /metrics).
 */
export class FaultLog extends EventEmitter<FaultLogEvents> implements FaultSink {
  private readonly out: TraceOutput | undefined;
  private plan: FaultPlan = { seed: 0, rules: [] };
  private seq = new Map<number, number>();
  /** Faults per rule name and vring, for the current plan and session (/status). */
  counts = new Map<string, Map<number, number>>();
  /** Faults per rule, action and vring since the process started (/metrics). */
  readonly totals = new Map<string, { rule: string; do: FaultAction; vring: number | 'session'; n: number }>();

  constructor(target?: string | NodeJS.WritableStream) {
    super();
    this.out = target === undefined ? undefined : openTraceOutput(target);
  }

  /** Counts and sequence numbers start again for `plan`. */
  use(plan: FaultPlan): void {
    this.plan = plan;
    this.seq = new Map();
    this.counts = new Map();
  }

  record(e: FaultEvent): void {
    const seq = (this.seq.get(e.vring) ?? 0) + 1;
    this.seq.set(e.vring, seq);
    const name = this.plan.rules[e.rule]?.name ?? `rule${e.rule}`;
    const action = ACTION_NAMES[e.action] ?? 'drop';
    const vring = e.vring === SESSION_VRING ? 'session' : e.vring;
    const field = e.field === undefined ? undefined : FIELD_NAMES[e.field];
    const value = (v: bigint) => (field && HEX_FIELDS.has(field) ? `0x${v.toString(16)}` : Number(v));
    const byVring = this.counts.get(name) ?? new Map<number, number>();
    byVring.set(e.vring, (byVring.get(e.vring) ?? 0) + 1);
    this.counts.set(name, byVring);
    const key = `${name}|${action}|${e.vring}`;
    const total = this.totals.get(key) ?? { rule: name, do: action, vring, n: 0 };
    total.n++;
    this.totals.set(key, total);
    const line: FaultLine = {
      seq,
      rule: name,
      do: action,
      vring,
      event: Number(e.event),
      ...(e.ringIdx !== undefined ? { ringIdx: e.ringIdx } : {}),
      ...(e.request !== undefined ? { request: e.request } : {}),
      ...(field !== undefined ? { field } : {}),
      ...(e.old !== undefined ? { old: value(e.old) } : {}),
      ...(e.new !== undefined ? { new: value(e.new) } : {}),
      t: Math.round(e.t * 1000) / 1000,
    };
    this.emit('line', line);
    this.out?.write(`${JSON.stringify(line)}\n`);
  }

  /** Faults injected per rule of the current plan (all vrings), in plan order. */
  perRule(): { rule: string; do: FaultAction; on: string; injected: number }[] {
    return this.plan.rules.map((r) => ({
      rule: r.name,
      do: r.do,
      on: r.on,
      injected: [...(this.counts.get(r.name)?.values() ?? [])].reduce((a, b) => a + b, 0),
    }));
  }

  close(): void {
    if (this.out) closeTraceOutput(this.out);
  }
}
