/**
 * The learning data plane (`--datapath ts`): the TS reference ring (src/virtio/split-ring.ts)
 * moving real frames, one JS call per packet, on the main thread. Slow on purpose-built
 * grounds: every step is readable and traceable. Same device semantics as the C++ workers.
 */
import type { Logger } from 'pino';
import { applyHostMtu, type OpenHostBackend } from '../host/host-backend.js';
import type { NativeBinding, NativePoller } from '../native.js';
import { hasFeature, VirtioFeature as F } from '../features.js';
import { DirtyLog } from '../virtio/dirty-log.js';
import type { GuestMemoryRef } from '../virtio/guest-memory.js';
import { brokenMessage, RingError, ringErrorName } from '../virtio/ring-errors.js';
import { SplitRingRef } from '../virtio/split-ring.js';
import { PackedRingRef } from '../virtio/packed-ring.js';
import type { Element, RingConfig, Vring } from '../virtio/ring-types.js';
import type { Observers } from '../trace/observe.js';
import type { CapturedFrame, PcapWriter } from '../trace/pcapng.js';
import { DeviceCounters } from './counters.js';
import { type HostPort, makeHostPort } from './host-ports.js';
import { FrameHold } from '../faults/frame-hold.js';
import { ANNOUNCE_GAPS_MS, Announcer } from './rarp.js';
import { changesFrame, faultNote, holds, Liar, type Lies, rulesOf, twice } from '../faults/lies.js';
import { faultEvent, type FaultSink } from '../faults/log.js';
import { type CompiledPlan, VRING_ACTIONS } from '../faults/plan.js';
import type {
  DataPlane,
  DataPlaneEvents,
  DirtyLogArea,
  GuestMemorySource,
  RingPosition,
  RingStart,
} from './data-plane.js';
import { defaultRss, flowInput, reverseFlowInput, type Steering, toeplitz } from './rss.js';
import {
  ChainVerdict,
  headerLen,
  numBuffersOffset,
  ReceiveVerdict,
  receiveChainRule,
  receiveRule,
  recordsFlow,
  tapOffloads,
} from './rules.js';

const READABLE = 1;

interface RingRun {
  /** What the session started the ring with; `enabled` and `callFd` follow its later calls. */
  vring: RingStart;
  ring: Vring;
  kick?: NativePoller;
  broken: boolean;
}

/** How the TS data plane is built (everything but the session's events). */
export interface TsDataPlaneOptions {
  queuePairs: number;
  host: OpenHostBackend;
  steering?: Steering;
  observe?: Observers;
}

export class TsDataPlane implements DataPlane {
  readonly counters: DeviceCounters;
  readonly queuePairs: number;
  /** The host side of each queue pair. */
  private readonly ports: HostPort[];
  private steering: Steering;
  private observe: Observers;
  /** Positions of rings not running (where they stopped). */
  private readonly stopped = new Map<number, RingPosition>();
  private features = 0n;
  private hdrLen = 12;
  private mem: GuestMemoryRef | undefined;
  /** The dirty log area (SET_LOG_BASE); marked while VHOST_F_LOG_ALL is acked (`dirty`). */
  private logArea: DirtyLog | undefined;
  private readonly runs = new Map<number, RingRun>();
  private readonly hostPollers = new Map<number, NativePoller>();
  private readonly pending = new Map<number, Buffer>();
  private readonly host: OpenHostBackend;

  constructor(
    private readonly native: NativeBinding,
    options: TsDataPlaneOptions,
    private readonly log: Logger,
    private readonly events: DataPlaneEvents,
  ) {
    this.queuePairs = options.queuePairs;
    this.host = options.host;
    this.ports = Array.from({ length: options.queuePairs }, (_, p) =>
      makeHostPort(native, options.host.spec, options.host.fds[p]),
    );
    this.steering = options.steering ?? { policy: 'none', rss: defaultRss(options.queuePairs) };
    this.observe = options.observe ?? {};
    this.counters = new DeviceCounters(options.queuePairs * 2);
  }

  /** Flow affinity: the pair each flow was last sent on, by the hash of its replies. */
  private readonly flows = new Map<number, number>();

  /** The receiveq pair steering picks for `frame` arriving on `pair` (see native SteerTarget). */
  private steerTarget(pair: number, frame: Buffer): number {
    const { policy, rss } = this.steering;
    if (policy === 'none' || this.queuePairs === 1 || frame.length <= this.hdrLen) return pair;
    const { input, type } = flowInput(frame.subarray(this.hdrLen));
    if (type === 'none') return pair;
    const h = toeplitz(rss.key, input);
    let target = rss.table[h % rss.table.length] ?? pair;
    if (policy === 'flow-affinity') target = this.flows.get(h) ?? target;
    const run = this.runs.get(2 * target);
    return run && run.vring.enabled ? target : pair;
  }

  private recordFlow(pair: number, frame: Buffer): void {
    const { input, type } = flowInput(frame.subarray(this.hdrLen));
    if (type !== 'none') this.flows.set(toeplitz(this.steering.rss.key, reverseFlowInput(input)), pair);
  }

  /** A frame of `pair`'s host (or loopback) to the receiveq steering picks. */
  private route(pair: number, frame: Buffer): number {
    const target = this.steerTarget(pair, frame);
    if (target === pair) return this.deliver(pair, frame);
    // Single-threaded: the frame goes straight into the other pair's ring (no handover ring).
    if (this.deliver(target, frame) === 0) this.counters.add(2 * target, 'dropNoBuffers');
    this.flushRx(target);
    this.counters.add(2 * pair, 'handedOver');
    return 1;
  }

  private port(pair: number): HostPort {
    return this.ports[pair] as HostPort;
  }

  private has(bit: bigint): boolean {
    return hasFeature(this.features, bit);
  }

  /** The dirty log in force: an area, and VHOST_F_LOG_ALL acked. */
  private get dirty(): DirtyLog | undefined {
    return this.has(F.VHOST_F_LOG_ALL) ? this.logArea : undefined;
  }

  setObservers(observe: Observers): void {
    // Frame by frame, step by step: nothing is pending; the rings take the new ring trace.
    this.observe = { ...observe };
    for (const run of this.runs.values()) this.reattach(run);
  }

  setSteering(steering: Steering): void {
    this.steering = steering;
    this.flows.clear();
  }

  setLog(log: DirtyLogArea | undefined): void {
    // Single-threaded: no write is in flight; the rings take the new area now.
    this.logArea = log ? new DirtyLog(new Uint8Array(this.native.mappingBuffer(log.mappingId))) : undefined;
    for (const run of this.runs.values()) run.ring.log = this.dirty;
  }

  setRingLog(index: number, logGuestAddr: bigint | undefined): void {
    const run = this.runs.get(index);
    if (!run) return;
    run.vring.logGuestAddr = logGuestAddr;
    this.reattach(run);
  }

  setFeatures(features: bigint): void {
    this.features = features;
    this.hdrLen = headerLen(features);
    for (const port of this.ports) port.configure(this.hdrLen, tapOffloads(features));
    for (const run of this.runs.values()) this.reattach(run);
  }

  start(start: RingStart, memory: GuestMemorySource): void {
    if (!this.mem) this.resume(memory);
    const vring = { ...start };
    this.stopped.delete(vring.index);
    const ring = this.attach(vring, vring.usedIdx ?? -1);
    const run: RingRun = { vring, ring, broken: false };
    this.runs.set(vring.index, run);
    if (ring.broken) return this.broken(run);
    if (vring.kickFd >= 0) {
      const fd = vring.kickFd;
      run.kick = new this.native.Poller(fd, () => {
        this.native.eventfdRead(fd);
        this.counters.add(vring.index, 'kicks');
        this.process(vring.index >> 1, vring.index % 2 === 0);
      });
      run.kick.start(READABLE);
    }
    const pair = vring.index >> 1;
    const hostFd = this.port(pair).fd;
    if (vring.index % 2 === 0 && hostFd !== undefined && !this.hostPollers.has(pair)) {
      const p = new this.native.Poller(hostFd, () => this.processRx(pair));
      this.hostPollers.set(pair, p);
      p.start(READABLE);
    }
    this.process(pair, true);
  }

  stop(index: number): RingPosition {
    const run = this.runs.get(index);
    if (!run) return this.stopped.get(index) ?? { lastAvailIdx: 0, usedIdx: 0 };
    // used-burst: a stop publishes what waits (the positions handed back must hold it).
    const st = this.notifyState(index);
    st.burstN = 0;
    if (index % 2 === 1 && st.heldUsed) run.ring.flush(st.heldUsed);
    else if (index % 2 === 0) this.flushRx(index >> 1);
    st.heldUsed = 0;
    run.kick?.close();
    this.runs.delete(index);
    if (index % 2 === 0) {
      this.hostPollers.get(index >> 1)?.close();
      this.hostPollers.delete(index >> 1);
    }
    const at = { lastAvailIdx: run.ring.lastAvailIdx, usedIdx: run.ring.usedIdx };
    this.stopped.set(index, at);
    return at;
  }

  positions(): RingPosition[] {
    return Array.from({ length: this.queuePairs * 2 }, (_, i) => {
      const run = this.runs.get(i);
      if (run) return { lastAvailIdx: run.ring.lastAvailIdx, usedIdx: run.ring.usedIdx };
      return this.stopped.get(i) ?? { lastAvailIdx: 0, usedIdx: 0 };
    });
  }

  setEnabled(index: number, enabled: boolean): void {
    const run = this.runs.get(index);
    if (!run) return;
    run.vring.enabled = enabled;
    if (enabled) this.process(index >> 1, index % 2 === 0);
  }

  setCall(index: number, callFd: number): void {
    const run = this.runs.get(index);
    if (run) run.vring.callFd = callFd;
  }

  quiesce(): void {
    // Single-threaded: nothing runs while the memory table changes. Views die with mappings.
    this.mem = undefined;
  }

  resume(memory: GuestMemorySource): void {
    this.mem = memory.refView();
    for (const run of this.runs.values()) this.reattach(run);
  }

  setHostMtu(mtu: number): void {
    applyHostMtu(this.host, mtu, this.log);
  }

  sendRarp(mac: string): void {
    this.log.info({ mac, rounds: ANNOUNCE_GAPS_MS.length }, 'SEND_RARP: announcing the guest MAC (RARP)');
    this.announcer.announce(mac);
  }

  /** SEND_RARP's frames, out of pair 0's host port (not to the guest: a loopback port drops them). */
  private readonly announcer = new Announcer((frame) => {
    try {
      this.port(0).send(Buffer.concat([Buffer.alloc(this.hdrLen), frame]));
    } catch (err) {
      this.log.warn({ err }, 'SEND_RARP: the announce frame could not be sent');
    }
  });

  close(): void {
    this.announcer.cancel();
    if (this.holdTimer) clearTimeout(this.holdTimer);
    for (const st of this.notifyStates.values()) if (st.timer) clearTimeout(st.timer);
    this.holds.clear();
    for (const run of this.runs.values()) run.kick?.close();
    for (const p of this.hostPollers.values()) p.close();
    this.runs.clear();
    this.hostPollers.clear();
  }

  // --- rings ------------------------------------------------------------------------------

  private attach(vring: RingStart, usedIdx: number): Vring {
    const ring = this.makeRing(vring, usedIdx);
    ring.log = this.dirty;
    const trace = this.observe.ringTrace;
    if (trace) ring.onEvent = (e) => trace.record(vring.index, e);
    return ring;
  }

  private makeRing(vring: RingStart, usedIdx: number): Vring {
    const mem = this.mem as GuestMemoryRef;
    const cfg: RingConfig = {
      num: vring.num,
      descVa: vring.desc,
      availVa: vring.avail,
      usedVa: vring.used,
      eventIdx: this.has(F.RING_F_EVENT_IDX),
      indirect: this.has(F.RING_F_INDIRECT_DESC),
      notifyOnEmpty: this.has(F.F_NOTIFY_ON_EMPTY),
      // VIRTIO_F_IN_ORDER: the transmitq publishes one used element per burst (nothing is
      // written into its buffers). Not under a fault plan: its lies are per chain.
      inOrderBatch: vring.index % 2 === 1 && this.has(F.F_IN_ORDER) && !this.liar?.of(vring.index),
      ...(vring.logGuestAddr !== undefined ? { logGuestAddr: vring.logGuestAddr } : {}),
    };
    // A packed ring keeps no used index in memory: its position comes with the start.
    if (this.has(F.F_RING_PACKED))
      return new PackedRingRef(
        mem,
        { ...cfg, packed: true },
        vring.lastAvailIdx,
        usedIdx < 0 ? vring.lastAvailIdx : usedIdx,
      );
    if (usedIdx < 0) {
      // Continue from used->idx in guest memory (what QEMU resumes from after a restart).
      const v = mem.vaView(vring.used, 4n);
      usedIdx = v ? new DataView(v.bytes.buffer, v.bytes.byteOffset).getUint16(v.offset + 2, true) : 0;
    }
    return new SplitRingRef(mem, cfg, vring.lastAvailIdx, usedIdx);
  }

  /** New views (memory changed) or new features: same ring position. */
  private reattach(run: RingRun): void {
    if (!this.mem) return;
    const old = run.ring;
    run.ring = this.attach({ ...run.vring, lastAvailIdx: old.lastAvailIdx }, old.usedIdx);
    run.ring.signalledUsed = old.signalledUsed;
    run.ring.signalledUsedValid = old.signalledUsedValid;
  }

  /**
   * Runs `fn` with this thread's guest-memory faults charged to vring `index`
   * (native/memory_fault.h): an access past the end of a file the front-end shrank lands on a
   * zero page instead of killing the process, and the vring is marked broken (MEMORY_FAULT).
   */
  private charged<T>(index: number, fn: () => T): T {
    // Already charged to this vring (a frame delivered inside a receive pass): nothing to do,
    // and no native call per frame.
    if (this.chargedTo === index) return fn();
    const outer = this.chargedTo;
    this.chargedTo = index;
    this.native.memoryFaultScope(index);
    try {
      return fn();
    } finally {
      this.chargedTo = outer;
      this.native.memoryFaultScope(outer);
      const run = this.runs.get(index);
      if (this.native.takeMemoryFault(index) && run && !run.broken) {
        run.ring.break(RingError.MEMORY_FAULT);
        this.broken(run);
      }
    }
  }

  /** The vring this thread's guest-memory faults are charged to now (-1: none). */
  private chargedTo = -1;

  private broken(run: RingRun): void {
    if (run.broken) return;
    run.broken = true;
    // A walk that failed on the zero page put in for a fault failed because the memory went.
    if (this.native.takeMemoryFault(run.vring.index)) run.ring.break(RingError.MEMORY_FAULT);
    this.counters.add(run.vring.index, 'ringErrors');
    const name = ringErrorName(run.ring.error);
    this.log.error({ vring: run.vring.index, error: name }, brokenMessage(name));
    this.events.vringBroken(run.vring.index, name);
  }

  private notify(run: RingRun): void {
    const { signalledUsed, signalledUsedValid } = run.ring;
    let send = run.ring.needNotify();
    if (send && this.liar?.notifyHeldBack(run.vring.index)) {
      // notify-drop: owed, not sent; the next decision after the window interrupts the driver
      // for everything that piled up (as native/queue_pair.cc Notify).
      run.ring.signalledUsed = signalledUsed;
      run.ring.signalledUsedValid = signalledUsedValid;
      send = false;
    }
    const st = this.notifyState(run.vring.index);
    if (send && st.delayMs > 0) {
      // notify-delay: the interrupt goes out later; one pending at a time.
      const at = performance.now() + st.delayMs;
      if (at < st.atMs) {
        st.atMs = at;
        if (st.timer) clearTimeout(st.timer);
        st.timer = setTimeout(() => {
          st.timer = undefined;
          st.atMs = Infinity;
          if (run.vring.callFd >= 0) this.native.eventfdWrite(run.vring.callFd, 1n);
          this.counters.add(run.vring.index, 'notifySent');
        }, st.delayMs);
      }
      send = false;
    }
    st.delayMs = 0;
    if (send) {
      if (run.vring.callFd >= 0) this.native.eventfdWrite(run.vring.callFd, 1n);
      this.counters.add(run.vring.index, 'notifySent');
    } else this.counters.add(run.vring.index, 'notifySuppressed');
    // notify-storm: interrupts with nothing new behind them.
    for (; st.stormN > 0; st.stormN--) if (run.vring.callFd >= 0) this.native.eventfdWrite(run.vring.callFd, 1n);
  }

  /** Per vring: used-burst, notify-storm and notify-delay state (native/queue_pair.h). */
  private readonly notifyStates = new Map<
    number,
    { burstN: number; heldUsed: number; stormN: number; delayMs: number; atMs: number; timer?: NodeJS.Timeout }
  >();
  private notifyState(index: number) {
    let st = this.notifyStates.get(index);
    if (!st) {
      st = { burstN: 0, heldUsed: 0, stormN: 0, delayMs: 0, atMs: Infinity };
      this.notifyStates.set(index, st);
    }
    return st;
  }

  /** The notification lies of one event, for its burst (native/queue_pair_faults.cc TakeNotifyLies). */
  private takeNotifyLies(index: number, l: Lies, head: number): void {
    const st = this.notifyState(index);
    if (l.usedBurst >= 0) st.burstN = Math.min(l.burstN, this.runs.get(index)?.vring.num ?? l.burstN);
    if (l.storm >= 0) st.stormN += l.stormN;
    if (l.notifyDelay >= 0) st.delayMs = Math.max(st.delayMs, Number(l.notifyDelayNs) / 1e6);
    this.liar?.recordNotify(index, l, head);
  }

  private process(pair: number, rx: boolean): void {
    if (!this.mem) return;
    this.processTx(pair);
    if (rx) {
      this.hostPollers.get(pair)?.start(READABLE);
      this.processRx(pair);
    }
  }

  private gather(e: Element): Buffer {
    return Buffer.concat(e.out.map((s) => s.bytes.subarray(s.offset, s.offset + s.len)));
  }

  /** transmitq: every chain to the host, used with len 0, one flush and notify per burst. */
  private processTx(pair: number): void {
    this.charged(2 * pair + 1, () => this.processTxBurst(pair));
  }

  private processTxBurst(pair: number): void {
    const run = this.runs.get(2 * pair + 1);
    if (!run || run.broken || !this.mem) return;
    const index = run.vring.index;
    for (;;) {
      const elems = run.ring.popBurst(64);
      const st = this.notifyState(index);
      let filled = st.heldUsed; // used-burst: written, not published yet
      for (const e of elems) {
        // With a fault plan, each chain popped is an event (as native/queue_pair.cc).
        const faults = this.liar?.of(index);
        const l = faults ? this.liar?.take(faults, index) : undefined;
        if (l) this.takeNotifyLies(index, l, e.head);
        if (!l) run.ring.fill(e.head, 0, filled++, e.slots);
        else if (l.withhold >= 0) this.liar?.recordWithheld(index, l, e.head);
        else {
          const [id, len] = this.liar?.lieUsed(index, l, e.head, 0, run.ring) ?? [e.head, 0];
          run.ring.fill(id, len, filled++, e.slots);
          if (twice(l)) run.ring.fill(id, len, filled++, e.slots); // completed a second time
        }
        if (e.outLen < this.hdrLen) {
          this.counters.add(index, 'dropMalformed');
          continue;
        }
        const frame = this.gather(e);
        // Captured as the guest sent it, before the enable check (as the C++ path does).
        if (this.observe.capture) this.capture(index, 'fromGuest', frame, this.hdrLen, undefined, this.note(l));
        if (recordsFlow(this.steering.policy === 'flow-affinity', run.vring.enabled)) this.recordFlow(pair, frame);
        if (!run.vring.enabled) {
          this.counters.add(index, 'dropDisabled');
          continue;
        }
        if (l && l.drop >= 0) continue;
        if (l && holds(l) && this.liar) {
          // delay, rate, reorder: a copy leaves later; the chain is completed now.
          const held = changesFrame(l) ? this.liar.lieFrame(l, frame, this.hdrLen) : frame;
          this.hold(index, l, held);
          if (l.duplicate >= 0) {
            this.hold(index, l, held);
            this.liar.record(index, l.duplicate, VRING_ACTIONS.duplicate, l.event, { ringIdx: e.head });
          }
          this.liar.recordHeld(index, l);
          this.liar.recordFrame(index, l, this.hdrLen);
          continue;
        }
        const reordered = this.holds.get(index);
        if (reordered?.size) {
          reordered.passed();
          this.armHoldTimer();
        }
        const out = l && l.corrupt >= 0 && this.liar ? this.liar.lieFrame(l, frame, this.hdrLen) : frame;
        const copies = l && l.duplicate >= 0 ? 2 : 1;
        for (let c = 0; c < copies; c++) {
          try {
            if (this.port(pair).send(out) === 'looped') {
              // Back to the guest: on this pair's receiveq, or where steering says.
              if (this.route(pair, Buffer.from(out)) === 0) this.counters.add(2 * pair, 'dropNoBuffers');
              this.flushRx(pair);
            }
          } catch {
            this.counters.add(index, 'dropHostError');
            break;
          }
          if (c === 1 && l)
            this.liar?.record(index, l.duplicate, VRING_ACTIONS.duplicate, l.event, { ringIdx: e.head });
          this.counters.add(index, 'frames');
          this.counters.add(index, 'bytes', frame.length - this.hdrLen);
        }
        if (l) this.liar?.recordFrame(index, l, this.hdrLen);
      }
      if (elems.length > 0) {
        if (filled && filled < st.burstN)
          st.heldUsed = filled; // used-burst: until the batch is full
        else if (filled) {
          run.ring.flush(filled);
          st.heldUsed = 0;
          st.burstN = 0;
          this.notify(run);
        }
        this.counters.add(index, 'bursts');
      }
      if (run.ring.broken) return this.broken(run);
      if (elems.length === 0) {
        run.ring.setNotification(true);
        if (run.ring.empty()) return;
        run.ring.setNotification(false);
      }
    }
  }

  private filled = new Map<number, { count: number; frames: number; bytes: number }>();
  /** The fault plan's lies, when a plan is loaded. */
  private liar: Liar | undefined;
  private inDuplicate = false;
  /** Frames held by delay, rate, reorder, per vring; a held frame for the guest is delivered without new lies. */
  private readonly holds = new Map<number, FrameHold>();
  private releasing = false;
  private holdTimer: NodeJS.Timeout | undefined;
  private holdTimerAt = Infinity;

  /** Holds a frame of vring `index` (native/queue_pair_hold.cc HoldFrame). */
  private hold(index: number, l: Lies, frame: Buffer): void {
    const hold = this.holds.get(index) ?? new FrameHold();
    this.holds.set(index, hold);
    const now = performance.now();
    let at = now + Number(l.delayNs) / 1e6;
    if (l.rateRule && l.rateRule.value > 0n) {
      // One frame at a time on the emulated link; the header is not on the wire.
      const bits = 8 * Math.max(0, frame.length - this.hdrLen);
      const start = Math.max(at, l.rateRule.linkFreeMs);
      l.rateRule.linkFreeMs = start + (bits * 1000) / Number(l.rateRule.value);
      at = l.rateRule.linkFreeMs;
    }
    if (l.reorder >= 0) at = now + 1000;
    if (!hold.push(at, l.reorder >= 0 ? l.gap : -1, frame)) this.counters.add(index, 'dropNoBuffers');
    this.armHoldTimer();
  }

  /** Releases the held frames that are due, then re-arms the timer on the next one. */
  private releaseHeld(): void {
    const now = performance.now();
    for (const [index, hold] of this.holds) {
      const pair = index >> 1;
      if (index % 2 === 1) {
        hold.release(now, (frame) => {
          this.sendHeld(pair, index, frame);
          return true;
        });
      } else {
        this.releasing = true;
        hold.release(now, (frame) => this.deliver(pair, frame) !== 0);
        this.releasing = false;
        this.flushRx(pair);
      }
    }
    this.armHoldTimer();
  }

  private sendHeld(pair: number, index: number, frame: Buffer): void {
    try {
      if (this.port(pair).send(frame) === 'looped') {
        if (this.route(pair, Buffer.from(frame)) === 0) this.counters.add(2 * pair, 'dropNoBuffers');
        this.flushRx(pair);
      }
    } catch {
      this.counters.add(index, 'dropHostError');
      return;
    }
    this.counters.add(index, 'frames');
    this.counters.add(index, 'bytes', frame.length - this.hdrLen);
  }

  private armHoldTimer(): void {
    let next = Infinity;
    for (const h of this.holds.values()) next = Math.min(next, h.next());
    if (next === this.holdTimerAt) return;
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    this.holdTimerAt = next;
    if (next === Infinity) return;
    // Due but blocked (no guest buffers): look again in 1 ms.
    const inMs = Math.max(next - performance.now(), next <= performance.now() ? 1 : 0);
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.holdTimerAt = Infinity;
      this.releaseHeld();
    }, inMs);
  }
  private readonly startMs = performance.now();

  setFaults(plan: CompiledPlan | undefined, sink: FaultSink | undefined): void {
    // Each fault is also a ring trace event, next to the steps it changed.
    const trace = this.observe.ringTrace;
    const traced: FaultSink | undefined =
      sink && trace
        ? {
            record: (e) => {
              sink.record(e);
              trace.record(e.vring, faultEvent(plan, e));
            },
          }
        : sink;
    this.liar = plan
      ? new Liar(plan, this.queuePairs * 2, traced, this.startMs, (v) => this.runs.get(v)?.vring.num ?? 256)
      : undefined;
    // IN_ORDER batching is on only for transmitqs without rules: the rings learn of the plan.
    for (const run of this.runs.values()) this.reattach(run);
  }

  /** The capture comment's note for a frame with these lies. */
  private note(l: Lies | undefined): string | undefined {
    return l && this.liar ? faultNote(this.liar.plan.plan, rulesOf(l)) : undefined;
  }

  /**
   * A frame into `pair`'s receiveq chains: 1 delivered (or dropped for good), 0 no buffers
   * (the caller keeps it), -1 ring broken.
   */
  private deliver(pair: number, frame: Buffer): number {
    return this.charged(2 * pair, () => this.deliverFrame(pair, frame));
  }

  private deliverFrame(pair: number, frame: Buffer): number {
    // (frame may be replaced by a changed copy: fault injection)
    const run = this.runs.get(2 * pair);
    if (!run || run.broken) return 0;
    const index = run.vring.index;
    if (!run.vring.enabled) {
      this.counters.add(index, 'dropDisabled');
      return 1;
    }
    const verdict = receiveRule(this.features, frame[0] ?? 0, frame[1] ?? 0);
    if (verdict !== ReceiveVerdict.deliver && verdict !== ReceiveVerdict.clearFlags) {
      this.counters.add(index, 'dropMalformed');
      return 1;
    }
    // With a fault plan, each frame for the guest is an event, decided once: a frame that waits
    // for buffers keeps its lies (as native/queue_pair.cc).
    let l: Lies | undefined;
    const faults = this.inDuplicate || this.releasing ? undefined : this.liar?.of(index);
    if (faults && this.liar) {
      l = this.liar.toGuest.get(index);
      if (!l?.pending) {
        l = this.liar.take(faults, index);
        this.liar.toGuest.set(index, l);
      }
      if (l.drop >= 0) {
        l.pending = false;
        return 1;
      }
      if (changesFrame(l)) frame = this.liar.lieFrame(l, frame, this.hdrLen);
      if (holds(l)) {
        // delay, rate, reorder: the frame (as changed) waits; its used-element lies are not told.
        this.hold(index, l, frame);
        if (l.duplicate >= 0) {
          this.hold(index, l, frame);
          this.liar.record(index, l.duplicate, VRING_ACTIONS.duplicate, l.event);
        }
        this.liar.recordHeld(index, l);
        this.liar.recordFrame(index, l, this.hdrLen);
        l.pending = false;
        return 1;
      }
    }
    const reordered = this.releasing || this.inDuplicate ? undefined : this.holds.get(index);
    if (reordered?.size) {
      reordered.passed();
      this.armHoldTimer();
    }
    const f = this.filled.get(pair) ?? { count: 0, frames: 0, bytes: 0 };
    this.filled.set(pair, f);
    const firstFill = f.count;
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
        run.ring.rewind(chains.length);
        f.count -= chains.length;
        return 0;
      }
      if (receiveChainRule(this.features, this.hdrLen, e.inLen, frame.length, chains.length) !== ChainVerdict.take) {
        // Drop the frame, keep the chain (only the first chain of a frame can be refused).
        run.ring.rewind(1);
        this.counters.add(index, 'dropTooBig');
        if (l) l.pending = false;
        return 1;
      }
      chains.push(e);
      let n = 0;
      for (const s of e.in) {
        const take = Math.min(s.len, frame.length - copied - n);
        if (take <= 0) break;
        frame.copy(s.bytes, s.offset, copied + n, copied + n + take);
        run.ring.log?.mark(s.gpa, take);
        n += take;
      }
      run.ring.fill(e.head, n, f.count++, e.slots);
      if (chains.length === 1) firstLen = n;
      copied += n;
    }
    // The header as the guest reads it: num_buffers = chains holding this frame; flags cleared
    // when the guest cannot take them.
    const nb = numBuffersOffset(this.hdrLen);
    if (nb >= 0) this.writeIn(chains[0] as Element, nb, [chains.length & 0xff, chains.length >> 8], run.ring.log);
    if (verdict === ReceiveVerdict.clearFlags) this.writeIn(chains[0] as Element, 0, [0], run.ring.log);
    let numBuffers = chains.length;
    if (l && this.liar) {
      this.takeNotifyLies(index, l, (chains[0] as Element).head);
      this.liar.recordFrame(index, l, this.hdrLen);
      if ((l.header[6] as number) >= 0 && nb >= 0) {
        // num_buffers (6): told after the device wrote the true count.
        numBuffers = Number(l.headerValue[6]);
        this.liar.record(index, l.header[6] as number, VRING_ACTIONS.header, l.event, {
          field: 6,
          old: BigInt(chains.length),
          new: l.headerValue[6],
        });
        this.writeIn(chains[0] as Element, nb, [numBuffers & 0xff, (numBuffers >> 8) & 0xff], run.ring.log);
      }
      const head = (chains[0] as Element).head;
      let reported = head;
      if (Liar.aboutUsed(l)) {
        // The first chain's used element, written again with the lie.
        const [id, len] = this.liar.lieUsed(index, l, head, firstLen, run.ring);
        reported = id;
        run.ring.fill(id, len, firstFill, (chains[0] as Element).slots);
      }
      // used-id "repeat": a second used element for the same head.
      if (twice(l)) run.ring.fill(reported, firstLen, f.count++, (chains[0] as Element).slots);
      l.pending = false;
    }
    if (this.observe.capture) {
      const seen = Buffer.from(frame.subarray(0, this.hdrLen + this.observe.capture.snapLen));
      if (nb >= 0) seen.writeUInt16LE(numBuffers & 0xffff, nb);
      if (verdict === ReceiveVerdict.clearFlags) seen[0] = 0;
      this.capture(run.vring.index, 'toGuest', seen, this.hdrLen, frame.length - this.hdrLen, this.note(l));
    }
    f.frames++;
    f.bytes += frame.length - this.hdrLen;
    if (l && l.duplicate >= 0) {
      // The same frame once more (no event of its own); lost when no buffer is left for it.
      this.inDuplicate = true;
      if (this.deliver(pair, frame) > 0) this.liar?.record(index, l.duplicate, VRING_ACTIONS.duplicate, l.event);
      this.inDuplicate = false;
    }
    return 1;
  }

  /** The TS path captures frame by frame (it is the learning path: per-packet JS is its nature). */
  private capture(
    vring: number,
    direction: CapturedFrame['direction'],
    f: Buffer,
    hdrLen: number,
    origLen?: number,
    faults?: string,
  ): void {
    const w = this.observe.capture as PcapWriter;
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

  /** Writes `bytes` at byte `pos` of the chain's writable part, each marked in the dirty log. */
  private writeIn(e: Element, pos: number, bytes: number[], log: DirtyLog | undefined): void {
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

  private flushRx(pair: number): void {
    this.charged(2 * pair, () => this.flushRxBurst(pair));
  }

  private flushRxBurst(pair: number): void {
    const run = this.runs.get(2 * pair);
    const f = this.filled.get(pair);
    if (!run || !f || f.count === 0) return;
    const st = this.notifyState(2 * pair);
    if (f.count < st.burstN) return; // used-burst: until the batch is full
    st.burstN = 0;
    run.ring.flush(f.count);
    this.counters.add(run.vring.index, 'frames', f.frames);
    this.counters.add(run.vring.index, 'bytes', f.bytes);
    this.counters.add(run.vring.index, 'bursts');
    this.filled.set(pair, { count: 0, frames: 0, bytes: 0 });
    this.notify(run);
  }

  /** receiveq: host frames into guest buffers until either side runs dry. */
  private processRx(pair: number): void {
    this.charged(2 * pair, () => this.processRxBurst(pair));
  }

  private processRxBurst(pair: number): void {
    const run = this.runs.get(2 * pair);
    const port = this.port(pair);
    if (!run || run.broken || !this.mem || !port.produces) return;
    for (let budget = 256; budget > 0; budget--) {
      if (!this.pending.has(pair)) {
        const frame = this.port(pair).receive(this.hdrLen);
        if (!frame) break;
        this.pending.set(pair, frame);
      }
      const r = this.route(pair, this.pending.get(pair) as Buffer);
      if (r < 0) return;
      if (r === 0) {
        this.flushRx(pair);
        // No guest buffers: stop reading the host until the guest kicks this queue.
        this.hostPollers.get(pair)?.stop();
        run.ring.setNotification(true);
        if (run.ring.empty()) return;
        continue;
      }
      this.pending.delete(pair);
    }
    this.flushRx(pair);
    // A source without an fd (null:source) never runs dry: come back on the next turn.
    if (port.fd === undefined) setImmediate(() => this.processRx(pair));
  }
}
