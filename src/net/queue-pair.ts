/**
 * One queue pair of the TS data plane: receiveq 2n (toGuest) and transmitq 2n+1 (fromGuest),
 * their rings (the TS reference, split or packed), the pair's host port, and its fault room when
 * a plan has rules for it. The twin of native/queue_pair.h, method for method (native/README.md
 * has the table), on the main thread, one JS call per frame: slow on purpose, every step
 * readable and traceable.
 *
 *   transmitq --pop--> fill --> sendChain --> host port (or loopback: route) --flush/notify-->
 *   host port --route--> deliver --place/fill--> receiveq --flushReceiveq/notify-->
 */
import { FROM_GUEST, type Direction, type FrameVerdict, PairFaults, TO_GUEST } from '../faults/pair-faults.js';
import { faultNote, type Lies, rulesOf } from '../faults/lies.js';
import { VirtioFeature as F } from '../features.js';
import type { NativePoller } from '../native.js';
import type { CapturedFrame, PcapWriter } from '../trace/pcapng.js';
import type { DirtyLog } from '../virtio/dirty-log.js';
import { PackedRingRef } from '../virtio/packed-ring.js';
import { brokenMessage, RingError, ringErrorName } from '../virtio/ring-errors.js';
import { type Element, MAX_BURST, type RingConfig, type Vring } from '../virtio/ring-types.js';
import { SplitRingRef } from '../virtio/split-ring.js';
import type { RingPosition, RingStart } from './data-plane.js';
import type { HostPort } from './host-ports.js';
import { ChainVerdict, numBuffersOffset, ReceiveVerdict, receiveChainRule, receiveRule, recordsFlow } from './rules.js';
import type { TsDevice } from './ts-device.js';

const READABLE = 1;
/** What one receive pass takes before it yields (native kReceiveBudget). */
const RECEIVE_BUDGET = 256;

/** A started vring of the pair. */
interface RingRun {
  /** What the session started the ring with; `enabled` and `callFd` follow its later calls. */
  vring: RingStart;
  ring: Vring;
  kick?: NativePoller;
  broken: boolean;
}

export class QueuePair {
  readonly receiveq: number;
  readonly transmitq: number;
  /** The started vrings: [receiveq, transmitq]. */
  private readonly runs: [RingRun | undefined, RingRun | undefined] = [undefined, undefined];
  /** Positions of vrings not running (where they stopped). */
  private readonly stopped: [RingPosition | undefined, RingPosition | undefined] = [undefined, undefined];
  private hostPoller: NativePoller | undefined;
  /** A host frame waiting for guest buffers, as [header][frame]. */
  private pending: Buffer | undefined;
  /** This burst's receiveq fills, and the frames and bytes behind them. */
  private filled = { count: 0, frames: 0, bytes: 0 };
  /** The fault room: undefined without rules for this pair (pair-faults.ts). */
  private faults: PairFaults | undefined;
  /** deliver of a frame whose lies were told already (a duplicate, a released held frame). */
  private again = false;
  /** The pair's timer: frames and interrupts the fault room holds. */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;

  constructor(
    readonly pair: number,
    private readonly device: TsDevice,
    readonly port: HostPort,
    /** Every pair of the device, this one included: where steering hands a frame over. */
    private readonly peers: readonly QueuePair[],
  ) {
    this.receiveq = 2 * pair;
    this.transmitq = 2 * pair + 1;
  }

  // --- set-up --------------------------------------------------------------------------------

  /** The ring got its first kick: attach it and process what waits. */
  start(start: RingStart): void {
    const d = (start.index & 1) as Direction;
    const vring = { ...start };
    this.stopped[d] = undefined;
    const run: RingRun = { vring, ring: this.attach(vring, vring.usedIdx), broken: false };
    this.runs[d] = run;
    if (run.ring.broken) return this.broken(run);
    if (vring.kickFd >= 0) {
      const fd = vring.kickFd;
      run.kick = new this.device.native.Poller(fd, () => {
        this.device.native.eventfdRead(fd);
        this.device.counters.add(vring.index, 'kicks');
        this.work(d === TO_GUEST);
      });
      run.kick.start(READABLE);
    }
    if (d === TO_GUEST && this.port.fd !== undefined && !this.hostPoller) {
      this.hostPoller = new this.device.native.Poller(this.port.fd, () => this.work(true));
      this.hostPoller.start(READABLE);
    }
    this.work(true);
  }

  /** Stops vring `index` and hands its position back (native Teardown, for one vring). */
  teardown(index: number): RingPosition {
    const d = (index & 1) as Direction;
    const run = this.runs[d];
    if (!run) return this.position(d);
    // used-burst: a stop publishes what waits (the positions handed back must hold it).
    if (d === FROM_GUEST) {
      const waiting = this.faults?.stop(FROM_GUEST) ?? 0;
      if (waiting) run.ring.flush(waiting);
    } else {
      this.faults?.stop(TO_GUEST);
      this.flushReceiveq();
    }
    run.kick?.close();
    this.runs[d] = undefined;
    if (d === TO_GUEST) {
      this.hostPoller?.close();
      this.hostPoller = undefined;
    }
    this.stopped[d] = { lastAvailIdx: run.ring.lastAvailIdx, usedIdx: run.ring.usedIdx };
    return this.stopped[d];
  }

  /** Where vring d is: running as now, or where it stopped. */
  position(d: Direction): RingPosition {
    const run = this.runs[d];
    if (run) return { lastAvailIdx: run.ring.lastAvailIdx, usedIdx: run.ring.usedIdx };
    return this.stopped[d] ?? { lastAvailIdx: 0, usedIdx: 0 };
  }

  setEnabled(d: Direction, enabled: boolean): void {
    const run = this.runs[d];
    if (!run) return;
    run.vring.enabled = enabled;
    if (enabled) this.work(d === TO_GUEST);
  }

  setCall(d: Direction, callFd: number): void {
    const run = this.runs[d];
    if (run) run.vring.callFd = callFd;
  }

  /** VHOST_VRING_F_LOG turned on or off on a running vring. */
  setRingLog(d: Direction, logGuestAddr: bigint | undefined): void {
    const run = this.runs[d];
    if (!run) return;
    run.vring.logGuestAddr = logGuestAddr;
    this.reattach();
  }

  /**
   * The fault room (native Setup): made for a plan with rules for this pair, kept while it still
   * holds frames or interrupts of an earlier plan.
   */
  attachFaults(): void {
    const rules = this.device.rulesOf(this.pair);
    if (rules && !this.faults) this.faults = new PairFaults(this.pair, this.device);
    this.faults?.attach(rules ?? { rules: [undefined, undefined], sink: undefined, startMs: 0 });
    if (this.faults?.idle()) this.faults = undefined;
  }

  /** SET_LOG_BASE or SET_FEATURES changed the dirty log in force: the rings log there now. */
  setDirtyLog(): void {
    for (const run of this.runs) run?.ring.setLog(this.device.dirty);
  }

  /** New views (memory changed), features, log or plan: the same ring positions. */
  reattach(): void {
    if (!this.device.mem) return;
    for (const run of this.runs) {
      if (!run) continue;
      const old = run.ring.state();
      run.ring = this.attach({ ...run.vring, lastAvailIdx: old.lastAvailIdx }, old.usedIdx);
      run.ring.setSignalled(old.signalledUsed, old.signalledUsedValid);
    }
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const run of this.runs) run?.kick?.close();
    this.hostPoller?.close();
    this.hostPoller = undefined;
    this.runs[0] = this.runs[1] = undefined;
  }

  private attach(vring: RingStart, usedIdx: number): Vring {
    const ring = this.makeRing(vring, usedIdx);
    ring.setLog(this.device.dirty);
    const trace = this.device.observe.ringTrace;
    if (trace) ring.setTrace((e) => trace.record(vring.index, e));
    return ring;
  }

  private makeRing(vring: RingStart, usedIdx: number): Vring {
    const device = this.device;
    const mem = device.mem as NonNullable<TsDevice['mem']>;
    const cfg: RingConfig = {
      num: vring.num,
      descVa: vring.desc,
      availVa: vring.avail,
      usedVa: vring.used,
      eventIdx: device.has(F.RING_F_EVENT_IDX),
      indirect: device.has(F.RING_F_INDIRECT_DESC),
      notifyOnEmpty: device.has(F.F_NOTIFY_ON_EMPTY),
      // VIRTIO_F_IN_ORDER: the transmitq publishes one used element per burst (nothing is
      // written into its buffers). Not under a fault plan: its lies are per chain.
      inOrderBatch: vring.index % 2 === 1 && device.has(F.F_IN_ORDER) && !device.faultsOf(vring.index),
      ...(vring.logGuestAddr !== undefined ? { logGuestAddr: vring.logGuestAddr } : {}),
    };
    // The positions come with the start: the session decided where the ring resumes.
    if (device.has(F.F_RING_PACKED)) {
      const journal = vring.journal ? { journal: vring.journal } : {};
      return new PackedRingRef(mem, { ...cfg, packed: true, ...journal }, vring.lastAvailIdx, usedIdx);
    }
    return new SplitRingRef(mem, cfg, vring.lastAvailIdx, usedIdx);
  }

  // --- one pass ------------------------------------------------------------------------------

  /** One pass (native Work): the transmitq, the receiveq when asked, what the fault room holds. */
  work(receiveq: boolean): void {
    if (!this.device.mem) return;
    this.charged(this.transmitq, () => this.processTransmitq());
    if (receiveq) {
      this.hostPoller?.start(READABLE);
      this.charged(this.receiveq, () => this.processReceiveq());
    }
    if (this.faults) this.releaseHeld();
  }

  /**
   * transmitq: pop chains, fill each used (len 0: the device wrote nothing into them), hand each
   * frame to the host, then one flush and one notification decision per burst.
   */
  processTransmitq(): void {
    const run = this.runs[FROM_GUEST];
    if (!run || run.broken) return;
    for (;;) {
      const elems = run.ring.popBurst(MAX_BURST);
      // used-burst: entries written in an earlier burst and not published yet.
      let filled = this.faults ? this.faults.waiting(FROM_GUEST) : 0;
      for (const e of elems) {
        // With a fault plan, each chain popped is an event, and its used element may be a lie.
        const l = this.faults?.chainPopped(e.head, run.vring.num);
        if (!l) run.ring.fill(e.head, 0, filled++, e.slots);
        else {
          const u = (this.faults as PairFaults).used(FROM_GUEST, l, run.ring, e.head, 0);
          for (let k = 0; k < u.count; k++) {
            run.ring.fill(u.id, u.len, filled, e.slots);
            if (u.wrongWrap) run.ring.flipWrap(filled);
            filled++;
          }
        }
        this.sendChain(run, e, l);
      }
      if (elems.length > 0) {
        if (filled && (!this.faults || this.faults.publish(FROM_GUEST, filled))) {
          run.ring.flush(filled);
          this.notify(run, FROM_GUEST);
        }
        this.device.counters.add(this.transmitq, 'bursts');
      }
      if (run.ring.broken) return this.broken(run);
      if (elems.length === 0) {
        // Empty: ask for kicks again, then look once more (the driver may have added meanwhile).
        run.ring.setNotification(true);
        if (run.ring.empty()) return;
        run.ring.setNotification(false);
      }
    }
  }

  /** One transmitq chain's frame to the host port (or, loopback, back to a receiveq). */
  private sendChain(run: RingRun, e: Element, l: Lies | undefined): void {
    const { counters, hdrLen, steering } = this.device;
    if (e.outLen < hdrLen) {
      counters.add(this.transmitq, 'dropMalformed');
      return;
    }
    const frame = Buffer.concat(e.out.map((s) => s.bytes.subarray(s.offset, s.offset + s.len)));
    // Captured as the guest sent it, before the enable check (as the C++ path does).
    if (this.device.observe.capture) this.capture(this.transmitq, 'fromGuest', frame, undefined, l);
    if (recordsFlow(steering.flowAffinity, run.vring.enabled)) steering.recordFlow(this.pair, frame, hdrLen);
    if (!run.vring.enabled) {
      // A started but disabled transmitq is drained and its frames discarded.
      counters.add(this.transmitq, 'dropDisabled');
      return;
    }
    let f: FrameVerdict = { go: true, copies: 1, frame };
    if (this.faults) {
      // A fault plan's hook: the frame may be dropped, held, changed or sent twice.
      f = this.faults.leaving(l, frame, e.head);
      if (!f.go) return;
    }
    let sent = 0;
    for (; sent < f.copies; sent++) if (!this.countSent(this.sendFrame(f.frame), f.frame, frame.length - hdrLen)) break;
    if (l) this.faults?.left(l, e.head, sent);
  }

  private sendFrame(frame: Buffer): 'sent' | 'looped' | 'failed' {
    try {
      return this.port.send(frame);
    } catch {
      return 'failed';
    }
  }

  /**
   * Counts a frame handed to the host port; a looped one goes back to the guest, on this pair's
   * receiveq or where steering says. False when the port refused it.
   */
  private countSent(sent: 'sent' | 'looped' | 'failed', frame: Buffer, bytes: number): boolean {
    const counters = this.device.counters;
    if (sent === 'failed') {
      counters.add(this.transmitq, 'dropHostError');
      return false;
    }
    if (sent === 'looped') {
      if (this.route(Buffer.from(frame)) === 0) counters.add(this.receiveq, 'dropNoBuffers');
      this.flushReceiveq();
    }
    counters.add(this.transmitq, 'frames');
    counters.add(this.transmitq, 'bytes', bytes);
    return true;
  }

  /** receiveq: host frames into guest buffers until either side runs dry, or the budget does. */
  processReceiveq(): void {
    const run = this.runs[TO_GUEST];
    if (!run || run.broken || !this.port.produces) return;
    for (let budget = RECEIVE_BUDGET; budget > 0; budget--) {
      this.pending ??= this.port.receive(this.device.hdrLen);
      if (!this.pending) break;
      const r = this.route(this.pending);
      if (r < 0) return;
      if (r === 0) {
        this.flushReceiveq();
        // No guest buffers: stop reading the host until the guest kicks this queue.
        this.hostPoller?.stop();
        run.ring.setNotification(true);
        if (run.ring.empty()) return;
        continue;
      }
      this.pending = undefined;
    }
    this.flushReceiveq();
    // A source without an fd (null:source) never runs dry: come back on the next turn.
    if (this.port.fd === undefined) setImmediate(() => this.work(true));
  }

  /** A frame for this pair's receiveq to the receiveq steering picks: here, or another pair's. */
  private route(frame: Buffer): number {
    const { steering, hdrLen } = this.device;
    const target = steering.target(
      this.pair,
      frame,
      hdrLen,
      (p) => this.peers[p]?.runs[TO_GUEST]?.vring.enabled ?? false,
    );
    if (target === this.pair) return this.deliver(frame);
    // Single-threaded: the frame goes straight into the other pair's ring (no handover ring).
    const peer = this.peers[target] as QueuePair;
    if (peer.deliver(frame) === 0) this.device.counters.add(peer.receiveq, 'dropNoBuffers');
    peer.flushReceiveq();
    this.device.counters.add(this.receiveq, 'handedOver');
    return 1;
  }

  /**
   * Places a frame ([header][frame]) into receiveq chains: 1 delivered or dropped for good, 0 not
   * enough guest buffers (the caller keeps the frame), -1 ring broken.
   */
  deliver(frame: Buffer): number {
    const run = this.runs[TO_GUEST];
    const { counters, features } = this.device;
    if (!run || run.broken) return 0;
    if (!run.vring.enabled) {
      // A disabled receiveq gets nothing.
      counters.add(this.receiveq, 'dropDisabled');
      return 1;
    }
    const verdict = receiveRule(features, frame[0] ?? 0, frame[1] ?? 0);
    if (verdict !== ReceiveVerdict.deliver && verdict !== ReceiveVerdict.clearFlags) {
      counters.add(this.receiveq, 'dropMalformed');
      return 1;
    }
    // A fault plan's hook: the frame may be dropped, held or changed (an event, decided once).
    let l: Lies | undefined;
    if (this.faults) {
      const f = this.faults.arriving(frame, this.again);
      if (!f.go) return 1;
      frame = f.frame;
      l = f.lies;
    }
    const r = this.charged(this.receiveq, () => this.place(run, frame, verdict, l));
    if (r <= 0) return r;
    this.filled.frames++;
    this.filled.bytes += frame.length - this.device.hdrLen;
    if (l && l.duplicate >= 0) this.deliverAgain(frame, l);
    return 1;
  }

  /** The same frame for the guest once more (a fault plan's duplicate; no event of its own). */
  private deliverAgain(frame: Buffer, l: Lies): void {
    // Lost when no buffer is left for it.
    this.again = true;
    if (this.deliver(frame) > 0) this.faults?.duplicated(l);
    this.again = false;
  }

  /**
   * Places a frame into as many receiveq chains as it needs and writes its header as the guest
   * reads it; deliver's result. `l`: the frame's lies, told once it is placed.
   */
  private place(run: RingRun, frame: Buffer, verdict: ReceiveVerdict, l: Lies | undefined): number {
    const { features, hdrLen, counters } = this.device;
    const dirty = this.device.dirty;
    const firstFill = this.filled.count;
    let firstLen = 0;
    const chains: Element[] = [];
    let copied = 0;
    while (copied < frame.length || chains.length === 0) {
      const [e] = run.ring.popBurst(1);
      if (run.ring.broken) {
        this.broken(run);
        return -1;
      }
      if (!e) {
        // Out of buffers: un-take this frame's chains (they are the last popped).
        run.ring.rewind(chains.length);
        this.filled.count -= chains.length;
        return 0;
      }
      if (receiveChainRule(features, hdrLen, e.inLen, frame.length, chains.length) !== ChainVerdict.take) {
        // Drop the frame, keep the chain (only the first chain of a frame can be refused).
        run.ring.rewind(1);
        counters.add(this.receiveq, 'dropTooBig');
        if (l) l.pending = false;
        return 1;
      }
      chains.push(e);
      let n = 0;
      for (const s of e.in) {
        const take = Math.min(s.len, frame.length - copied - n);
        if (take <= 0) break;
        frame.copy(s.bytes, s.offset, copied + n, copied + n + take);
        dirty?.mark(s.gpa, take);
        n += take;
      }
      run.ring.fill(e.head, n, this.filled.count++, e.slots);
      if (chains.length === 1) firstLen = n;
      copied += n;
    }
    // The header as the guest reads it: num_buffers = chains holding this frame (1 without
    // MRG_RXBUF), little-endian; flags cleared when the guest cannot take them.
    const first = chains[0] as Element;
    const nb = numBuffersOffset(hdrLen);
    let numBuffers = chains.length;
    if (verdict === ReceiveVerdict.clearFlags) writeIn(first, 0, [0], dirty);
    // A fault plan's hook: num_buffers and the first chain's used element may be lies.
    if (l && this.faults) numBuffers = this.tellPlaced(run, l, first, firstFill, firstLen, chains.length, nb >= 0);
    if (nb >= 0) writeIn(first, nb, [numBuffers & 0xff, (numBuffers >> 8) & 0xff], dirty);
    if (this.device.observe.capture) {
      const seen = Buffer.from(frame.subarray(0, hdrLen + this.device.observe.capture.snapLen));
      if (nb >= 0) seen.writeUInt16LE(numBuffers & 0xffff, nb);
      if (verdict === ReceiveVerdict.clearFlags) seen[0] = 0;
      this.capture(this.receiveq, 'toGuest', seen, frame.length - hdrLen, l);
    }
    return 1;
  }

  /** The receiveq's fills so far: one flush and one notification decision. */
  flushReceiveq(): void {
    const run = this.runs[TO_GUEST];
    const f = this.filled;
    if (!run || f.count === 0) return;
    // used-burst: until the batch is full.
    if (this.faults && !this.faults.publish(TO_GUEST, f.count)) return;
    const counters = this.device.counters;
    this.charged(this.receiveq, () => {
      run.ring.flush(f.count);
      counters.add(this.receiveq, 'frames', f.frames);
      counters.add(this.receiveq, 'bytes', f.bytes);
      counters.add(this.receiveq, 'bursts');
      this.filled = { count: 0, frames: 0, bytes: 0 };
      this.notify(run, TO_GUEST);
    });
  }

  /**
   * The fault room's placed hook for a frame place put in `taken` chains: the first chain's
   * used element told again (id, len, wrap), a second one for "repeat"; num_buffers as told.
   */
  private tellPlaced(
    run: RingRun,
    l: Lies,
    first: Element,
    firstFill: number,
    firstLen: number,
    taken: number,
    hasNumBuffers: boolean,
  ): number {
    const p = (this.faults as PairFaults).placed(l, run.ring, first.head, taken, firstLen, hasNumBuffers);
    if (p.rewrite) run.ring.fill(p.id, p.len, firstFill, first.slots);
    if (p.wrongWrap) run.ring.flipWrap(firstFill);
    if (p.twice) run.ring.fill(p.id, firstLen, this.filled.count++, first.slots);
    return p.numBuffers >= 0 ? p.numBuffers : taken;
  }

  // --- notifications, deferred work, errors --------------------------------------------------

  /** The notification decision for a flush: the ring's, then the fault plan's. */
  private notify(run: RingRun, d: Direction): void {
    // The ring decides whether (EVENT_IDX, NO_INTERRUPT); a fault plan, when.
    const send = this.faults ? this.faults.interrupt(d, run.ring) : run.ring.needNotify();
    if (send) this.signal(run);
    else this.device.counters.add(run.vring.index, 'notifySuppressed');
    // notify-storm: interrupts with nothing new behind them.
    if (this.faults)
      for (let k = this.faults.takeStorm(d); k > 0; k--)
        if (run.vring.callFd >= 0) this.device.native.eventfdWrite(run.vring.callFd, 1n);
  }

  /** An interrupt to the driver of the vring, counted. */
  private signal(run: RingRun): void {
    if (run.vring.callFd < 0) {
      // No call fd yet (a ring started at SET_VRING_KICK, before SET_VRING_CALL): nothing was
      // sent, so the ring forgets it decided one and the next flush signals. Counted as sent,
      // EVENT_IDX would hold back every later interrupt of a driver that never got this one.
      run.ring.setSignalled(0, false);
      return;
    }
    this.device.native.eventfdWrite(run.vring.callFd, 1n);
    this.device.counters.add(run.vring.index, 'notifySent');
  }

  /** Frames and interrupts the fault room holds that are due; the timer follows the earliest. */
  private releaseHeld(): void {
    const faults = this.faults;
    if (!faults) return;
    const rq = this.runs[TO_GUEST];
    faults.releaseDue(
      performance.now(),
      [rq !== undefined && !rq.broken, this.runs[FROM_GUEST] !== undefined],
      (frame) => {
        this.again = true; // its lies were told when it was held
        const r = this.deliver(frame);
        this.again = false;
        return r !== 0;
      },
      (frame) => this.countSent(this.sendFrame(frame), frame, frame.length - this.device.hdrLen),
      (d) => {
        const run = this.runs[d];
        if (run) this.signal(run);
      },
      (d, n) => {
        // used-burst's holdMs ran out: the batch goes as it is.
        if (d === TO_GUEST) return this.flushReceiveq(); // its count is filled's, its batch cleared
        const run = this.runs[FROM_GUEST];
        if (!n || !run || run.ring.broken) return;
        this.charged(this.transmitq, () => {
          run.ring.flush(n);
          this.notify(run, FROM_GUEST);
        });
      },
    );
    this.flushReceiveq();
    this.armTimer(faults.nextMs());
  }

  private armTimer(next: number): void {
    if (next === this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = next;
    if (next === Infinity) return;
    // Due but blocked (no guest buffers): look again in 1 ms.
    const now = performance.now();
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Infinity;
        this.releaseHeld();
      },
      next <= now ? 1 : next - now,
    );
  }

  private broken(run: RingRun): void {
    if (run.broken) return;
    run.broken = true;
    const { native, counters, log, events } = this.device;
    // A walk that failed on the zero page put in for a fault failed because the memory went.
    if (native.takeMemoryFault(run.vring.index)) run.ring.break(RingError.MEMORY_FAULT);
    counters.add(run.vring.index, 'ringErrors');
    const name = ringErrorName(run.ring.error);
    log.error({ vring: run.vring.index, error: name }, brokenMessage(name));
    events.vringBroken(run.vring.index, name);
  }

  /**
   * Runs `fn` with this thread's guest-memory faults charged to vring `index`
   * (native/memory_fault.h): an access past the end of a file the front-end shrank lands on a
   * zero page instead of killing the process, and the vring is marked broken (MEMORY_FAULT).
   */
  private charged<T>(index: number, fn: () => T): T {
    const device = this.device;
    // Already charged to this vring (a frame delivered inside a receive pass): nothing to do,
    // and no native call per frame.
    if (device.chargedTo === index) return fn();
    const outer = device.chargedTo;
    device.chargedTo = index;
    device.native.memoryFaultScope(index);
    try {
      return fn();
    } finally {
      device.chargedTo = outer;
      device.native.memoryFaultScope(outer);
      const run = this.runs[(index & 1) as Direction];
      if (device.native.takeMemoryFault(index) && run && !run.broken) {
        run.ring.break(RingError.MEMORY_FAULT);
        this.broken(run);
      }
    }
  }

  /** The TS path captures frame by frame (it is the learning path: per-packet JS is its nature). */
  private capture(
    vring: number,
    direction: CapturedFrame['direction'],
    f: Buffer,
    origLen: number | undefined,
    l: Lies | undefined,
  ): void {
    const w = this.device.observe.capture as PcapWriter;
    const hdrLen = this.device.hdrLen;
    const plan = this.device.compiledPlan;
    const faults = l && plan ? faultNote(plan.plan, rulesOf(l)) : undefined;
    w.write([
      {
        vring,
        timeNs: BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n,
        direction,
        origLen: origLen ?? f.length - hdrLen,
        header: f.subarray(0, hdrLen),
        data: f.subarray(hdrLen, hdrLen + w.snapLen),
        ...(faults ? { faults } : {}),
      },
    ]);
  }
}

/** Writes `bytes` at byte `pos` of the chain's writable part, each marked in the dirty log. */
function writeIn(e: Element, pos: number, bytes: number[], log: DirtyLog | undefined): void {
  for (const b of bytes) {
    let p = pos++;
    for (const s of e.in) {
      if (p < s.len) {
        s.bytes[s.offset + p] = b;
        log?.mark(s.gpa + BigInt(p), 1);
        break;
      }
      p -= s.len;
    }
  }
}
