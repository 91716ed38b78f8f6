/**
 * A compiled plan as the TS data plane applies it: the twin of native/faults.h VringFaults.
 * One instance per vring, holding that vring's rules, its event count and each rule's firings.
 */
import { type CompiledPlan, type CompiledRule, draw, fires, gated, mix64, VRING_ACTIONS } from './plan.js';

interface Live extends CompiledRule {
  fired: number;
  /** loss-gilbert: the model is in its bad state. */
  bad: boolean;
  /** rate: when the emulated link is free again (ms, performance.now()). */
  linkFreeMs: number;
}

export class VringFaults {
  private readonly rules: Live[];
  /** Events seen on this vring (chains popped on a transmitq, frames for the guest on a receiveq). */
  events = 0n;

  constructor(
    readonly seed: number,
    readonly vring: number,
    rules: CompiledRule[],
    /** Session start, ms (performance.now()). */
    private readonly startMs: number,
  ) {
    this.rules = rules.map((r) => ({ ...r, fired: 0, bad: false, linkFreeMs: 0 }));
  }

  static forVrings(plan: CompiledPlan | undefined, vrings: number, startMs: number): VringFaults[] {
    return Array.from(
      { length: vrings },
      (_, v) => new VringFaults(plan?.seed ?? 0, v, plan?.rules.filter((r) => r.vring === v) ?? [], startMs),
    );
  }

  get any(): boolean {
    return this.rules.length > 0;
  }

  private nowNs(): bigint {
    return BigInt(Math.floor((performance.now() - this.startMs) * 1e6));
  }

  /** loss-gilbert: lost in the current state? then the state moves (native/faults.h GilbertLoses). */
  private gilbertLoses(r: Live, e: bigint): boolean {
    const d = draw(this.seed, r.rule, r.vring, e);
    const lost = mix64(d) >= (r.bad ? r.gH : r.gK);
    r.bad = r.bad ? !(d < r.gR) : d < r.gP;
    return lost;
  }

  /** Takes the next event; calls fn(rule, event) for each event rule that fires, in plan order. */
  next(fn: (r: CompiledRule & { linkFreeMs: number }, event: bigint) => void): void {
    const e = this.events++;
    const now = this.nowNs();
    for (const r of this.rules) {
      if (r.action === VRING_ACTIONS['notify-drop']) continue;
      if (r.action === VRING_ACTIONS['loss-gilbert']) {
        if (!gated(r, e, r.fired, now) || !this.gilbertLoses(r, e)) continue;
      } else if (!fires(this.seed, r, e, r.fired, now)) continue;
      r.fired++;
      fn(r, e);
    }
  }

  /** notify-drop: the rule whose window holds interrupts back now, or undefined. */
  notifyDropped(): CompiledRule | undefined {
    const now = this.nowNs();
    return this.rules.find(
      (r) =>
        r.action === VRING_ACTIONS['notify-drop'] &&
        now >= r.atNs &&
        (r.untilNs < 0n || now < r.untilNs) &&
        (!r.count || r.fired < r.count),
    );
  }

  /** A notify-drop rule held an interrupt back (counts toward its `count`). */
  firedOutsideEvents(r: CompiledRule): void {
    const live = this.rules.find((x) => x.rule === r.rule);
    if (live) live.fired++;
  }
}
