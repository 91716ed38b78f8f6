/**
 * The fault log: one JSON line per injected fault (`--fault-log FILE|-`), and the per-rule
 * counts /status and /metrics show. Both data planes report through `FaultSink.record`: the C++
 * one from its observation records (decoded in src/trace/observe.ts), the TS one directly.
 *
 * A line: {"seq","rule","do","vring","event","ringIdx","field","old","new","t"}. `seq` counts
 * the faults of that vring (1, 2, ...), so a line depends only on the plan and the operations,
 * never on how the vrings' work interleaved; `t` is milliseconds since the session started.
 */
import { closeTraceOutput, openTraceOutput, type TraceOutput } from '../trace/output.js';
import { type FaultPlan, HEADER_FIELDS, VRING_ACTIONS, type VringAction } from './plan.js';

/** Field codes of a fault record (native/faults.h kField*): header fields, then these. */
export const FIELD_NAMES = [...Object.keys(HEADER_FIELDS), 'len', 'id', 'byte'] as const;
const ACTION_NAMES = Object.fromEntries(Object.entries(VRING_ACTIONS).map(([k, v]) => [v, k])) as Record<
  number,
  VringAction
>;

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
  /** Milliseconds since the session started. */
  t: number;
}

export interface FaultLine {
  seq: number;
  rule: string;
  do: VringAction;
  vring: number;
  event: number;
  ringIdx?: number;
  field?: string;
  old?: number;
  new?: number;
  t: number;
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
export class FaultLog implements FaultSink {
  private readonly out: TraceOutput | undefined;
  private plan: FaultPlan = { seed: 0, rules: [] };
  private seq = new Map<number, number>();
  /** Faults per rule name and vring, for the current plan and session (/status). */
  counts = new Map<string, Map<number, number>>();
  /** Faults per rule, action and vring since the process started (/metrics). */
  readonly totals = new Map<string, { rule: string; do: VringAction; vring: number; n: number }>();
  /** Called with every line (tests, subscribers of the programmatic API). */
  onLine: ((l: FaultLine) => void) | undefined;

  constructor(target?: string | NodeJS.WritableStream) {
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
    const byVring = this.counts.get(name) ?? new Map<number, number>();
    byVring.set(e.vring, (byVring.get(e.vring) ?? 0) + 1);
    this.counts.set(name, byVring);
    const key = `${name}|${action}|${e.vring}`;
    const total = this.totals.get(key) ?? { rule: name, do: action, vring: e.vring, n: 0 };
    total.n++;
    this.totals.set(key, total);
    const line: FaultLine = {
      seq,
      rule: name,
      do: action,
      vring: e.vring,
      event: Number(e.event),
      ...(e.ringIdx !== undefined ? { ringIdx: e.ringIdx } : {}),
      ...(e.field !== undefined ? { field: FIELD_NAMES[e.field] } : {}),
      ...(e.old !== undefined ? { old: Number(e.old) } : {}),
      ...(e.new !== undefined ? { new: Number(e.new) } : {}),
      t: Math.round(e.t * 1000) / 1000,
    };
    this.onLine?.(line);
    this.out?.write(`${JSON.stringify(line)}\n`);
  }

  /** Faults injected per rule of the current plan (all vrings), in plan order. */
  perRule(): { rule: string; do: VringAction; on: string; injected: number }[] {
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
