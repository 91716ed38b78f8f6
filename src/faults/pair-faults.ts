/**
 * The fault room of one queue pair: the twin of native/pair_faults.h, hook for hook. A pair
 * without rules holds no room; with one, the frame path calls these hooks and does what each
 * answers:
 *
 *   chainPopped  a transmitq chain was popped         -> its lies (an event), or undefined
 *   arriving     a frame for the guest, before place   -> drop/hold it, or place (a changed copy)
 *   leaving      a guest frame, before the host port   -> drop/hold it, or send (copies, a copy)
 *   used         a used element is about to be written -> withhold, or the id/len told (x2)
 *   placed       a frame for the guest was placed      -> num_buffers and used element told
 *   interrupt    a notification is about to go out     -> now, held back, or later; a storm
 *   publish      a burst's used entries, before flush  -> now, or wait for used-burst's batch
 *   releaseDue   the pair's timer                      -> held frames and late interrupts due
 *
 * Each lie told is recorded in the fault log in the same order and with the same values as the
 * C++ room, so both data planes write the same log for the same plan and operations.
 */
import type { Vring } from '../virtio/ring-types.js';
import type { VringFaults } from './engine.js';
import { FrameHold } from './frame-hold.js';
import {
  aboutUsed,
  changesFrame,
  headerFieldsIn,
  holds,
  lieFrame,
  lieUsed,
  type Lies,
  noLies,
  tell,
  twice,
} from './lies.js';
import type { FaultSink } from './log.js';
import { FIELD, VRING_ACTIONS as A } from './plan.js';

/** Directions of a pair: 0 the receiveq (toGuest), 1 the transmitq (fromGuest). */
export const TO_GUEST = 0;
export const FROM_GUEST = 1;
export type Direction = typeof TO_GUEST | typeof FROM_GUEST;

/** What the room reads of the device (native/device_config.h: hdrLen, Count). */
export interface FaultDevice {
  readonly hdrLen: number;
  count(vring: number, slot: 'dropNoBuffers' | 'dropTooBig'): void;
}

/** What to do with a frame, from arriving and leaving. */
export interface FrameVerdict {
  /** false: dropped or held (counted here). */
  go: boolean;
  /** 2 with duplicate. */
  copies: number;
  /** The frame to place or send: the one given, or a changed copy (corrupt, header, runt). */
  frame: Buffer;
}

/** The used element(s) told for a chain: `count` elements (0 withheld, 2 repeated) of `id`. */
export interface UsedLie {
  count: number;
  id: number;
  len: number;
  /** used-wrap: the element is flagged for the other wrap counter (packed rings). */
  wrongWrap: boolean;
}

/** What placed tells: num_buffers (-1: the truth), and the first chain's used element again. */
export interface PlacedLie {
  numBuffers: number;
  rewrite: boolean;
  twice: boolean;
  id: number;
  len: number;
  /** used-wrap, for the first chain's used element. */
  wrongWrap: boolean;
}

/** The rules of a pair's two vrings and where their lies are logged. */
export interface PairRules {
  rules: [VringFaults | undefined, VringFaults | undefined];
  sink: FaultSink | undefined;
  /** Session start (performance.now() ms): a fault's `t`. */
  startMs: number;
}

export class PairFaults {
  private rules: [VringFaults | undefined, VringFaults | undefined] = [undefined, undefined];
  private sink: FaultSink | undefined;
  private startMs = 0;
  private readonly lies: [Lies, Lies] = [noLies(), noLies()];
  /** delay, rate, reorder. */
  private readonly hold = [new FrameHold(), new FrameHold()] as const;
  /**
   * Per direction: used-burst's batch size for the burst in progress and the used elements
   * written but not published; notify-storm's extra interrupts; notify-delay's delay for this
   * burst and the time a deferred interrupt is due.
   */
  private readonly burstN = [0, 0];
  private readonly heldUsed = [0, 0];
  /** used-burst's holdMs, and when the waiting batch is due (performance.now() ms). */
  private readonly burstHoldMs = [0, 0];
  private readonly burstDueMs = [Infinity, Infinity];
  private readonly stormN = [0, 0];
  /** notify-storm's paceUs (ms), and when its next interrupt is due (performance.now() ms). */
  private readonly stormPaceMs = [0, 0];
  private readonly stormAtMs = [Infinity, Infinity];
  private readonly notifyDelayMs = [0, 0];
  private readonly notifyAtMs = [Infinity, Infinity];

  constructor(
    private readonly pair: number,
    private readonly device: FaultDevice,
  ) {}

  /** Takes the pair's rules and fault log (native: from the device config, on each Setup). */
  attach(r: PairRules): void {
    this.rules = r.rules;
    this.sink = r.sink;
    this.startMs = r.startMs;
    this.lies[TO_GUEST].pending = false;
  }

  /** Whether direction d has rules, or frames held: it cannot take a short path. */
  busy(d: Direction): boolean {
    return this.rules[d] !== undefined || this.hold[d].size > 0;
  }

  /** No rule, nothing held or owed: the pair may drop its room. */
  idle(): boolean {
    return ([TO_GUEST, FROM_GUEST] as const).every(
      (d) => !this.busy(d) && !this.heldUsed[d] && !this.stormN[d] && this.notifyAtMs[d] === Infinity,
    );
  }

  private vringOf(d: Direction): number {
    return 2 * this.pair + d;
  }

  private record(
    d: Direction,
    rule: number,
    action: number,
    event: bigint,
    o: { field?: number; ringIdx?: number; old?: bigint; new?: bigint } = {},
  ): void {
    this.sink?.record({
      rule,
      action,
      vring: this.vringOf(d),
      event,
      ...o,
      t: performance.now() - this.startMs,
    });
  }

  private take(d: Direction): Lies {
    const f = this.rules[d] as VringFaults;
    const l = noLies();
    l.pending = true;
    f.next((r, e) => tell(l, r, e, f.seed));
    // A drop is told when it is decided; the frame-changing lies of a dropped frame are never
    // applied (a transmitq chain's used-element lies still are: they are about its completion).
    if (l.drop >= 0) this.record(d, l.drop, l.dropAction, l.event);
    this.lies[d] = l;
    return l;
  }

  chainPopped(head: number, num: number): Lies | undefined {
    if (!this.rules[FROM_GUEST]) return undefined;
    const l = this.take(FROM_GUEST);
    this.takeNotifyLies(FROM_GUEST, l, head, num);
    return l;
  }

  /**
   * A frame for the guest: takes the event's lies (or keeps those of a frame that waited for
   * buffers); `lies` undefined when the receiveq has no rules. `again`: a duplicate or a released
   * held frame, whose lies were told already.
   */
  arriving(frame: Buffer, again: boolean): FrameVerdict & { lies: Lies | undefined } {
    const out = { go: true, copies: 1, frame, lies: undefined as Lies | undefined };
    if (again) return out;
    if (this.rules[TO_GUEST]) {
      // Each frame for the guest is an event, decided once: a frame that waits for buffers
      // keeps its lies.
      const l = this.lies[TO_GUEST].pending ? this.lies[TO_GUEST] : this.take(TO_GUEST);
      if (l.drop >= 0) {
        l.pending = false;
        return { ...out, go: false };
      }
      if (changesFrame(l)) out.frame = lieFrame(l, frame, this.device.hdrLen);
      if (holds(l)) {
        // delay, rate, reorder: the frame (as changed) waits; its used-element lies are not told.
        this.holdFrame(TO_GUEST, l, out.frame, undefined);
        l.pending = false;
        return { ...out, go: false };
      }
      out.copies = l.duplicate >= 0 ? 2 : 1;
      out.lies = l;
    }
    if (this.hold[TO_GUEST].size) this.hold[TO_GUEST].passed();
    return out;
  }

  leaving(l: Lies | undefined, frame: Buffer, head: number): FrameVerdict {
    if (!l && !this.hold[FROM_GUEST].size) return { go: true, copies: 1, frame };
    if (l && l.drop >= 0) return { go: false, copies: 0, frame }; // recorded when taken
    if (l && holds(l)) {
      // delay, rate, reorder: a copy leaves later; the chain is completed now, as a NIC
      // completes a frame once it is in its own queue.
      this.holdFrame(FROM_GUEST, l, changesFrame(l) ? lieFrame(l, frame, this.device.hdrLen) : frame, head);
      return { go: false, copies: 0, frame };
    }
    if (this.hold[FROM_GUEST].size) this.hold[FROM_GUEST].passed();
    // Only corrupt changes a frame that leaves at once.
    const out = l && l.corrupt >= 0 ? lieFrame(l, frame, this.device.hdrLen) : frame;
    return { go: true, copies: l && l.duplicate >= 0 ? 2 : 1, frame: out };
  }

  /** After a guest frame left `sent` times (duplicate), or was not sent: its lies recorded. */
  left(l: Lies, head: number, sent: number): void {
    if (sent === 2) this.record(FROM_GUEST, l.duplicate, A.duplicate, l.event, { ringIdx: head });
    this.recordFrameLies(FROM_GUEST, l);
  }

  /** A duplicate frame for the guest was placed too. */
  duplicated(l: Lies): void {
    this.record(TO_GUEST, l.duplicate, A.duplicate, l.event);
  }

  private recordFrameLies(d: Direction, l: Lies): void {
    for (const k of headerFieldsIn(this.device.hdrLen)) {
      const rule = l.header[k] as number;
      if (rule >= 0) this.record(d, rule, A.header, l.event, { field: k, old: l.headerOld[k], new: l.headerValue[k] });
    }
    if (l.corrupt >= 0)
      this.record(d, l.corrupt, A.corrupt, l.event, {
        field: FIELD.byte,
        old: BigInt(l.byteOld),
        new: BigInt(l.byteNew),
      });
    if (l.runt >= 0)
      this.record(d, l.runt, A.runt, l.event, { field: FIELD.len, old: BigInt(l.runtFrom), new: BigInt(l.runtTo) });
  }

  used(d: Direction, l: Lies, ring: Vring, head: number, len: number): UsedLie {
    if (l.withhold >= 0) {
      // Never completed: the chain stays in flight for the guest (the device knows it is done).
      this.record(d, l.withhold, A.withhold, l.event, { field: FIELD.id, ringIdx: head, old: BigInt(head), new: 0n });
      return { count: 0, id: head, len, wrongWrap: false };
    }
    return { ...this.told(d, l, ring, head, len), count: twice(l) ? 2 : 1 };
  }

  /** The used element told for chain `head` with `len` bytes written (lies recorded). */
  private told(
    d: Direction,
    l: Lies,
    ring: Vring,
    head: number,
    len: number,
  ): { id: number; len: number; wrongWrap: boolean } {
    const u = lieUsed(l, ring, ring.cfg.num, head, len);
    if (l.descRewrite >= 0)
      this.record(d, l.descRewrite, A['desc-rewrite'], l.event, {
        field: l.descField,
        ringIdx: head,
        old: u.descOld,
        new: l.descValue,
      });
    if (l.usedId >= 0)
      this.record(d, l.usedId, A['used-id'], l.event, {
        field: FIELD.id,
        ringIdx: head,
        old: BigInt(head),
        new: BigInt(u.id),
      });
    if (l.usedLen >= 0)
      this.record(d, l.usedLen, A['used-len'], l.event, {
        field: FIELD.len,
        ringIdx: head,
        old: BigInt(len),
        new: BigInt(u.len),
      });
    // used-wrap: a packed ring's used descriptor only (a split ring has no flags to lie with).
    const wrongWrap = l.usedWrap >= 0 && ring.cfg.packed === true;
    if (wrongWrap) this.record(d, l.usedWrap, A['used-wrap'], l.event, { ringIdx: head });
    return { id: u.id, len: u.len, wrongWrap };
  }

  placed(l: Lies, ring: Vring, head: number, taken: number, firstLen: number, hasNumBuffers: boolean): PlacedLie {
    const p: PlacedLie = { numBuffers: -1, rewrite: false, twice: false, id: head, len: 0, wrongWrap: false };
    this.takeNotifyLies(TO_GUEST, l, head, ring.cfg.num);
    this.recordFrameLies(TO_GUEST, l);
    if ((l.header[6] as number) >= 0 && hasNumBuffers) {
      // num_buffers (6): told after the device wrote the true count.
      this.record(TO_GUEST, l.header[6] as number, A.header, l.event, {
        field: 6,
        old: BigInt(taken),
        new: l.headerValue[6],
      });
      p.numBuffers = Number((l.headerValue[6] as bigint) & 0xffffn);
    }
    if (aboutUsed(l)) {
      // The first chain's used element, written again with the lie.
      const u = this.told(TO_GUEST, l, ring, head, firstLen);
      p.rewrite = true;
      p.id = u.id;
      p.len = u.len;
      p.wrongWrap = u.wrongWrap;
    }
    p.twice = twice(l); // used-id "repeat": a second used element for the same head
    l.pending = false;
    return p;
  }

  private takeNotifyLies(d: Direction, l: Lies, head: number, num: number): void {
    if (l.usedBurst >= 0) {
      // The batch can never be larger than the ring.
      this.burstN[d] = Math.min(l.burstN, num);
      this.burstHoldMs[d] = l.burstHoldMs;
      this.record(d, l.usedBurst, A['used-burst'], l.event, { ringIdx: head });
    }
    if (l.storm >= 0) {
      this.stormN[d] = (this.stormN[d] as number) + l.stormN;
      this.stormPaceMs[d] = l.stormPaceMs;
      this.record(d, l.storm, A['notify-storm'], l.event);
    }
    if (l.notifyDelay >= 0) {
      this.notifyDelayMs[d] = Math.max(this.notifyDelayMs[d] as number, Number(l.notifyDelayNs) / 1e6);
      this.record(d, l.notifyDelay, A['notify-delay'], l.event, {
        field: FIELD.delay_us,
        old: 0n,
        new: l.notifyDelayNs / 1000n,
      });
    }
  }

  /**
   * The ring's notification decision (needNotify) for direction d as the plan changes it: false
   * when held back (notify-drop: the ring forgets it decided) or deferred (notify-delay).
   */
  interrupt(d: Direction, ring: Vring): boolean {
    const { signalledUsed, signalledUsedValid } = ring.state();
    let send = ring.needNotify();
    const f = this.rules[d];
    const r = send && f ? f.notifyDropped() : undefined;
    if (f && r) {
      // notify-drop: the interrupt is owed, not sent (not an event). The ring forgets it was
      // decided, so the first decision after the window interrupts the driver for everything
      // that piled up.
      f.firedOutsideEvents(r);
      this.record(d, r.rule, A['notify-drop'], f.events);
      ring.setSignalled(signalledUsed, signalledUsedValid);
      send = false;
    }
    if (send && (this.notifyDelayMs[d] as number) > 0) {
      // notify-delay: the interrupt goes out later (releaseDue); one pending at a time.
      this.notifyAtMs[d] = Math.min(
        this.notifyAtMs[d] as number,
        performance.now() + (this.notifyDelayMs[d] as number),
      );
      send = false;
    }
    this.notifyDelayMs[d] = 0;
    return send;
  }

  /** notify-storm: interrupts owed with nothing behind them (taken: the caller sends them). */
  takeStorm(d: Direction): number {
    if (this.stormPaceMs[d]) {
      // Paced (paceUs): none now; releaseDue sends them one at a time (no faster than the timer).
      if (this.stormN[d] && this.stormAtMs[d] === Infinity)
        this.stormAtMs[d] = performance.now() + (this.stormPaceMs[d] as number);
      return 0;
    }
    const n = this.stormN[d] as number;
    this.stormN[d] = 0;
    this.stormAtMs[d] = Infinity; // an unpaced rule took what a paced one still owed
    return n;
  }

  /** used-burst: the used entries written and not published yet. */
  waiting(d: Direction): number {
    return this.heldUsed[d] as number;
  }

  /** Whether `filled` used entries publish now (else they wait for used-burst's batch). */
  publish(d: Direction, filled: number): boolean {
    if (filled < (this.burstN[d] as number)) {
      this.heldUsed[d] = filled; // used-burst: publish when the batch is full
      // holdMs: or once the first of them has waited that long (releaseDue).
      if (this.burstHoldMs[d] && this.burstDueMs[d] === Infinity)
        this.burstDueMs[d] = performance.now() + (this.burstHoldMs[d] as number);
      return false;
    }
    this.heldUsed[d] = 0;
    this.burstN[d] = 0;
    this.burstDueMs[d] = Infinity;
    return true;
  }

  /** A stop: the batch publishes whatever waits (returned: the entries to flush). */
  stop(d: Direction): number {
    this.burstN[d] = 0;
    this.burstDueMs[d] = Infinity;
    const n = this.heldUsed[d] as number;
    this.heldUsed[d] = 0;
    return n;
  }

  /** Held frames, deferred interrupts and bounded batches: the earliest due (performance.now() ms; Infinity: none). */
  nextMs(): number {
    return Math.min(
      this.hold[0].next(),
      this.hold[1].next(),
      ...this.notifyAtMs,
      ...this.burstDueMs,
      ...this.stormAtMs,
    );
  }

  /**
   * Releases what is due at `now`: toGuest(frame) returns false to keep a frame (no guest buffer
   * yet), fromGuest(frame) sends one; interrupt(d) sends a deferred interrupt; publish(d, n)
   * publishes the n used entries of a batch whose holdMs ran out. Each direction only when
   * `live[d]`.
   */
  releaseDue(
    now: number,
    live: readonly [boolean, boolean],
    toGuest: (frame: Buffer) => boolean,
    fromGuest: (frame: Buffer) => void,
    interrupt: (d: Direction) => void,
    publish: (d: Direction, n: number) => void,
  ): void {
    if (live[FROM_GUEST] && this.hold[FROM_GUEST].next() <= now)
      this.hold[FROM_GUEST].release(now, (f) => {
        fromGuest(f);
        return true;
      });
    if (live[TO_GUEST] && this.hold[TO_GUEST].next() <= now) this.hold[TO_GUEST].release(now, toGuest);
    for (const d of [TO_GUEST, FROM_GUEST] as const) {
      if (live[d] && (this.burstDueMs[d] as number) <= now) publish(d, this.stop(d));
      if ((this.stormAtMs[d] as number) <= now && this.stormN[d]) {
        // A paced storm: one interrupt now, the next a pace later (no catch-up run).
        this.stormN[d] = (this.stormN[d] as number) - 1;
        this.stormAtMs[d] = this.stormN[d] ? now + (this.stormPaceMs[d] as number) : Infinity;
        if (live[d]) interrupt(d);
      }
      if ((this.notifyAtMs[d] as number) > now) continue;
      this.notifyAtMs[d] = Infinity;
      interrupt(d);
    }
  }

  /** Holds a frame with its lies (delay, rate, reorder), twice with duplicate; recorded. */
  private holdFrame(d: Direction, l: Lies, frame: Buffer, ringIdx: number | undefined): void {
    this.holdOne(d, l, frame);
    if (l.duplicate >= 0) {
      this.holdOne(d, l, frame);
      this.record(d, l.duplicate, A.duplicate, l.event, ringIdx === undefined ? {} : { ringIdx });
    }
    if (l.delay >= 0)
      this.record(d, l.delay, A.delay, l.event, { field: FIELD.delay_us, old: 0n, new: l.delayNs / 1000n });
    if (l.rate >= 0) this.record(d, l.rate, A.rate, l.event);
    if (l.reorder >= 0) this.record(d, l.reorder, A.reorder, l.event);
    this.recordFrameLies(d, l);
  }

  private holdOne(d: Direction, l: Lies, frame: Buffer): void {
    const now = performance.now();
    let at = now + Number(l.delayNs) / 1e6;
    if (l.rateRule && l.rateRule.value > 0n) {
      // rate: the emulated link sends one frame at a time; the frame leaves once its last bit is
      // out (the virtio-net header is not on the wire).
      const bits = 8 * Math.max(0, frame.length - this.device.hdrLen);
      const start = Math.max(at, l.rateRule.linkFreeMs);
      l.rateRule.linkFreeMs = start + (bits * 1000) / Number(l.rateRule.value);
      at = l.rateRule.linkFreeMs;
    }
    // reorder: waits for `gap` later frames (or 1 s, so a last frame is not kept forever).
    if (l.reorder >= 0) at = now + 1000;
    if (!this.hold[d].push(at, l.reorder >= 0 ? l.gap : -1, frame)) this.device.count(this.vringOf(d), 'dropNoBuffers'); // full (netem's limit)
  }
}
