/**
 * Session faults: what the device does wrong on the vhost-user connection (`on: "session"`).
 * The backend asks before each request is handled (`verdict`), masks the feature offers it
 * sends (`offer`), and arms the timed disconnects (`disconnects`, then `takeDisconnect`); this
 * module decides and records, the backend acts. Decisions follow the same trigger as vring
 * rules (plan.ts `fires`), with these events:
 * - nack, delay-reply, offer-mask, receive-mode: the Nth time this session sends that request;
 * - disconnect, close-at: the Nth session served under the plan (at most once per session).
 * A rule with `session: N` acts only in the Nth session served under the plan.
 */
import type { RequestName } from '../vhost-user/codec.js';
import { type FaultSink, SESSION_VRING } from './log.js';
import { ACTION_CODES, type CompiledPlan, type CompiledSessionRule, FIELD, fires } from './plan.js';

/** What to do with one request instead of (or before) handling it. */
export type Verdict =
  | { kind: 'handle' }
  /** Close the connection; the request is not handled (close-at). */
  | { kind: 'close'; rule: string }
  /** Answer with a REPLY_ACK failure; the request is not applied (nack). */
  | { kind: 'nack' }
  /** Handle it `ms` later, reading nothing else meanwhile (delay-reply). */
  | { kind: 'delay'; ms: number };

export class SessionFaults {
  private readonly rules: CompiledSessionRule[];
  /** Firings per rule over every session of this plan (`count` limits them). */
  private readonly fired: number[];
  /** Sessions begun under this plan (the event of disconnect and close-at). */
  private sessions = -1;
  private messages = 0;
  private readonly seen = new Map<string, number>();
  private startMs = 0;

  constructor(
    private readonly plan: CompiledPlan,
    private readonly sink: FaultSink,
  ) {
    this.rules = plan.session;
    this.fired = plan.session.map(() => 0);
  }

  get any(): boolean {
    return this.rules.length > 0;
  }

  /** A session starts (or the plan arrives mid-session): `startMs` is when it started (performance.now()). */
  begin(startMs: number): void {
    this.sessions++;
    this.messages = 0;
    this.seen.clear();
    this.startMs = startMs;
  }

  /** Ms since the session began. */
  elapsedMs(): number {
    return performance.now() - this.startMs;
  }

  /** Decides what happens to the next request (message `n` of the session counts from 1). */
  verdict(request: string, canNack: boolean): Verdict {
    const n = ++this.messages;
    const occurrence = this.seen.get(request) ?? 0;
    this.seen.set(request, occurrence + 1);
    for (const [i, r] of this.rules.entries()) {
      if (r.action === 'close-at') {
        if (n !== r.value || !this.fire(i, BigInt(this.sessions))) continue;
        this.record(r, BigInt(this.sessions), { request, field: FIELD.message, new: BigInt(n) });
        return { kind: 'close', rule: this.plan.plan.rules[r.rule]?.name ?? '' };
      }
      if (r.request !== request) continue;
      if (r.action === 'nack' && canNack && this.fire(i, BigInt(occurrence))) {
        this.record(r, BigInt(occurrence), { request });
        return { kind: 'nack' };
      }
      if (r.action === 'delay-reply' && this.fire(i, BigInt(occurrence))) {
        this.record(r, BigInt(occurrence), { request, new: BigInt(r.value) });
        return { kind: 'delay', ms: r.value };
      }
    }
    return { kind: 'handle' };
  }

  /** The offer a GET_FEATURES / GET_PROTOCOL_FEATURES reply carries, with matching rules' bits removed. */
  offer(request: RequestName, value: bigint): bigint {
    const occurrence = BigInt((this.seen.get(request) ?? 1) - 1);
    let out = value;
    for (const [i, r] of this.rules.entries()) {
      if ((r.action !== 'offer-mask' && r.action !== 'receive-mode') || r.request !== request) continue;
      if (!this.fire(i, occurrence)) continue;
      const next = out & ~r.mask;
      const field = request === 'GET_FEATURES' ? FIELD.features : FIELD.protocol_features;
      this.record(r, occurrence, { request, field, old: out, new: next });
      out = next;
    }
    return out;
  }

  /** The disconnect rules of the plan, with when they are due (ms after the session began). */
  disconnects(): { index: number; atMs: number }[] {
    return this.rules.flatMap((r, index) =>
      r.action === 'disconnect' ? [{ index, atMs: Number(r.atNs / 1_000_000n) }] : [],
    );
  }

  /** A disconnect timer is due: true when the rule fires (it is recorded), false when not. */
  takeDisconnect(index: number): boolean {
    const r = this.rules[index];
    if (!r || !this.fire(index, BigInt(this.sessions), true)) return false;
    this.record(r, BigInt(this.sessions), {});
    return true;
  }

  private fire(i: number, event: bigint, timed = false): boolean {
    const r = this.rules[i] as CompiledSessionRule;
    if (r.session !== undefined && r.session !== this.sessions) return false;
    // A timed rule's window was checked by its timer; the others have no window but `atMs`.
    const now = timed ? -1n : BigInt(Math.round(this.elapsedMs() * 1e6));
    const rule = timed ? { ...r, atNs: -1n, untilNs: -1n } : r;
    if (!fires(this.plan.seed, rule, event, this.fired[i] as number, now)) return false;
    this.fired[i] = (this.fired[i] as number) + 1;
    return true;
  }

  private record(
    r: CompiledSessionRule,
    event: bigint,
    o: { request?: string; field?: number; old?: bigint; new?: bigint },
  ): void {
    this.sink.record({
      rule: r.rule,
      action: ACTION_CODES[r.action],
      vring: SESSION_VRING,
      event,
      ...o,
      t: this.elapsedMs(),
    });
  }
}
