/**
 * The production data plane: one C++ worker thread per queue pair (native/net_device.cc).
 * Every call here is control plane (ring start/stop, memory, features); frames never cross
 * into JS.
 */
import type { Logger } from 'pino';
import { hex } from '../features.js';
import { applyHostMtu, type OpenHostBackend } from '../host/host-backend.js';
import {
  call,
  HOST_FLAG_TAP_CHOOSE,
  HOST_FLAG_TAP_IO_URING,
  HostKindCode,
  type NativeBinding,
  type NativeNetDevice,
} from '../native.js';
import { brokenMessage, ringErrorName } from '../virtio/ring-errors.js';
import { type CapturedFrame, type ObserveRecord, type Observers, records } from '../trace/observe.js';
import { faultEvent, type FaultSink } from '../faults/log.js';
import { faultNote } from '../faults/lies.js';
import { ALWAYS, type CompiledPlan } from '../faults/plan.js';
import { COALESCE_DEFAULTS, COALESCE_MODES, type CoalesceConfig } from './coalesce.js';
import { DeviceCounters } from './counters.js';
import { makeHostPort } from './host-ports.js';
import { ANNOUNCE_GAPS_MS, Announcer } from './rarp.js';
import { headerLen } from './rules.js';
import type {
  DataPlane,
  DirtyLogArea,
  DataPlaneEvents,
  GuestMemorySource,
  RingPosition,
  RingStart,
} from './data-plane.js';
import { defaultRss, STEERING_CODE, type Steering } from './rss.js';

const timeOf = (r: ObserveRecord): bigint => (r.kind === 'frame' ? r.frame.timeNs : r.timeNs);

/** How often the observation rings are drained (when capture or the ring trace is on). */
const DRAIN_MS = 20;

/** How the C++ data plane is built (everything but the session's events). */
export interface NativeDataPlaneOptions {
  queuePairs: number;
  host: OpenHostBackend;
  steering?: Steering;
  /** Pin thread t to cpus[t % length]. */
  cpus?: number[];
  /** Pair p runs on thread threadOf[p] (default: one thread per pair). */
  threadOf?: number[];
  pollUs?: number;
  /** Interrupt coalescing (default: adaptive, COALESCE_DEFAULTS). */
  coalesce?: CoalesceConfig;
  observe?: Observers;
}

export class NativeDataPlane implements DataPlane {
  readonly counters: DeviceCounters;
  private readonly dev: NativeNetDevice;
  private readonly broken = new Set<number>();
  private observe: Observers;

  constructor(
    native: NativeBinding,
    options: NativeDataPlaneOptions,
    private readonly log: Logger,
    events: DataPlaneEvents,
  ) {
    const { queuePairs, host } = options;
    this.host = host;
    const steering = options.steering ?? { policy: 'none', rss: defaultRss(queuePairs) };
    this.observe = options.observe ?? {};
    this.counters = new DeviceCounters(queuePairs * 2);
    this.dev = new native.NetDevice(queuePairs, this.counters.array, (e) => {
      if (e.kind === 'pinFailed') {
        this.log.warn({ thread: e.thread, cpu: e.cpu, errno: e.errno }, 'worker thread not pinned: it runs on any CPU');
        return;
      }
      // A driver violation (or memory taken away): the queue is marked broken; logged once,
      // then only counted.
      if (this.broken.has(e.vring)) return;
      this.broken.add(e.vring);
      this.log.error({ vring: e.vring, error: e.name }, brokenMessage(e.name));
      events.vringBroken(e.vring, e.name);
    });
    if (options.cpus?.length) call('pin worker threads (--cpus)', () => this.dev.setCpus(options.cpus as number[]));
    if (options.threadOf) this.dev.setThreads(options.threadOf);
    if (options.pollUs) this.dev.setPoll(options.pollUs);
    this.coalesce = options.coalesce ?? { ...COALESCE_DEFAULTS };
    this.dev.setCoalesce(COALESCE_MODES.indexOf(this.coalesce.mode), this.coalesce.usecs, this.coalesce.frames);
    this.setSteering(steering);
    const spec = host.spec;
    // A TAP's writes: by default (io-uring=auto) io_uring only while it is the cheaper way per
    // frame on this machine (native/write_chooser.h); io-uring=on|off fixes the way.
    const writes = spec.kind === 'tap' || spec.kind === 'macvtap' ? (spec.writes ?? 'auto') : 'plain';
    this.dev.setHost(
      HostKindCode[spec.kind],
      host.fds,
      spec.kind === 'null' ? (spec.sourceLen ?? 0) : 0,
      (writes !== 'plain' ? HOST_FLAG_TAP_IO_URING : 0) | (writes === 'auto' ? HOST_FLAG_TAP_CHOOSE : 0),
    );
    this.vrings = queuePairs * 2;
    this.configureObservation();
    // SEND_RARP goes out of pair 0's host port from this thread: a TAP write or an AF_PACKET
    // send is one system call the kernel orders with the worker's own (no shared state).
    const port = makeHostPort(native, host.spec, host.fds[0]);
    this.announcer = new Announcer((frame) => {
      if (host.spec.kind === 'loopback' || host.spec.kind === 'null') return;
      try {
        port.send(Buffer.concat([Buffer.alloc(this.hdrLen), frame]));
      } catch (err) {
        this.log.warn({ err }, 'SEND_RARP: the announce frame could not be sent');
      }
    });
  }

  private readonly announcer: Announcer;
  /** Interrupt coalescing as configured (/status shows it). */
  readonly coalesce: CoalesceConfig;
  private readonly host: OpenHostBackend;
  private hdrLen = 12;

  private readonly vrings: number;
  /** Where injected faults are reported (a plan is loaded), or undefined. */
  private faultSink: FaultSink | undefined;
  /** The session's start on the clock the C++ records carry (CLOCK_REALTIME), for fault times. */
  private readonly startNs = BigInt(Date.now()) * 1_000_000n;

  /** Observation rings for what is on (capture, ring trace, fault log), drained on a timer. */
  private configureObservation(): void {
    const { capture, ringTrace } = this.observe;
    const on = !!capture || !!ringTrace || !!this.faultSink;
    this.drainObserve(); // what the old rings hold, before they are replaced
    this.dev.setObserve({
      capture: !!capture,
      trace: !!ringTrace,
      faults: !!this.faultSink,
      snapLen: capture?.snapLen,
      bytes: Math.max(256 << 10, Math.min(4 << 20, Math.floor((128 << 20) / this.vrings))),
    });
    if (on && !this.drainTimer) {
      this.drainBuf ??= Buffer.allocUnsafe(1 << 20);
      this.drainTimer = setInterval(() => this.drainObserve(), DRAIN_MS);
      this.drainTimer.unref();
    }
  }

  /** The plan in force (names for capture notes and the ring trace's fault events). */
  private plan: CompiledPlan | undefined;

  setFaults(plan: CompiledPlan | undefined, sink: FaultSink | undefined): void {
    this.plan = plan;
    const hadSink = !!this.faultSink;
    this.faultSink = plan ? sink : undefined;
    if (hadSink !== !!this.faultSink) this.configureObservation();
    this.dev.setFaults(
      plan?.seed ?? 0,
      (plan?.rules ?? []).map((r) => ({
        ...r,
        always: r.threshold >= ALWAYS,
        threshold: r.threshold >= ALWAYS ? 0n : r.threshold,
        atNs: BigInt.asUintN(64, r.atNs),
        untilNs: BigInt.asUintN(64, r.untilNs),
      })),
    );
  }

  private drainBuf: Buffer | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  /** Observation records lost because the drain fell behind (capture and trace together). */
  observeLost = 0;

  /** Moves what the workers recorded to the capture file and the ring trace. */
  drainObserve(): void {
    const buf = this.drainBuf;
    if (!buf) return;
    const { capture, ringTrace } = this.observe;
    for (let round = 0; round < 8; round++) {
      const n = this.dev.drainObserve(buf);
      if (n === 0) break;
      // The buffer holds vring after vring: put the batch back in time order (stable).
      const batch = [...records(buf, n)].sort((a, b) => (timeOf(a) < timeOf(b) ? -1 : timeOf(a) > timeOf(b) ? 1 : 0));
      const frames: CapturedFrame[] = [];
      for (const r of batch) {
        if (r.kind === 'frame') {
          const faults = r.frame.faultRules && this.plan ? faultNote(this.plan.plan, r.frame.faultRules) : undefined;
          frames.push(faults ? { ...r.frame, faults } : r.frame);
        } else if (r.kind === 'fault') {
          this.faultSink?.record({ ...r.fault, t: Number(r.timeNs - this.startNs) / 1e6 });
          ringTrace?.record(r.vring, faultEvent(this.plan, r.fault), Number(r.timeNs / 1000n) / 1000);
        } else ringTrace?.record(r.vring, r.event, Number(r.timeNs / 1000n) / 1000);
      }
      capture?.write(frames);
      if (n < buf.length / 2) break;
    }
    const lost = this.dev.observeLost().reduce((a, b) => a + b, 0);
    if (lost > this.observeLost) {
      const delta = lost - this.observeLost;
      if (capture) capture.dropped += delta;
      if (ringTrace) ringTrace.dropped += delta;
      this.observeLost = lost;
    }
  }

  setFeatures(features: bigint): void {
    this.hdrLen = headerLen(features);
    this.dev.setFeatures(features);
  }

  setObservers(observe: Observers): void {
    this.drainObserve(); // into the previous writers
    this.observe = { ...observe };
    this.configureObservation();
  }

  setSteering(steering: Steering): void {
    this.dev.setSteering(STEERING_CODE[steering.policy], Buffer.from(steering.rss.key), steering.rss.table);
  }

  setLog(log: DirtyLogArea | undefined): void {
    this.dev.setLog(log ? log.mappingId : -1);
  }

  setRingLog(index: number, logGuestAddr: bigint | undefined): void {
    this.dev.setRingLog(index, logGuestAddr ?? -1n);
  }

  start(ring: RingStart, memory: GuestMemorySource): void {
    this.resume(memory);
    this.broken.delete(ring.index);
    this.dev.startQueue(ring.index, {
      ...ring,
      logGuestAddr: ring.logGuestAddr ?? -1n,
      usedIdx: ring.usedIdx,
    });
    this.log.info(
      { vring: ring.index, num: ring.num, lastAvailIdx: ring.lastAvailIdx, desc: hex(ring.desc) },
      'vring processing',
    );
  }

  stop(index: number): RingPosition {
    const r = this.dev.stopQueue(index);
    if (r.broken) this.log.warn({ vring: index, error: ringErrorName(r.error) }, 'stopped a broken vring');
    return { lastAvailIdx: r.lastAvailIdx, usedIdx: r.usedIdx };
  }

  positions(): RingPosition[] {
    return this.dev.positions();
  }

  setEnabled(index: number, enabled: boolean): void {
    this.dev.setEnabled(index, enabled);
  }

  setCall(index: number, callFd: number): void {
    this.dev.setCall(index, callFd);
  }

  quiesce(): void {
    this.dev.pause();
  }

  resume(memory: GuestMemorySource): void {
    this.dev.setMemory(
      memory.regions.map((r) => ({ mappingId: r.mappingId, gpa: r.guestAddr, size: r.size, va: r.userAddr })),
    );
    this.dev.resume();
  }

  setHostMtu(mtu: number): void {
    applyHostMtu(this.host, mtu, this.log);
  }

  sendRarp(mac: string): void {
    this.log.info({ mac, rounds: ANNOUNCE_GAPS_MS.length }, 'SEND_RARP: announcing the guest MAC (RARP)');
    this.announcer.announce(mac);
  }

  close(): void {
    this.announcer.cancel();
    this.drainObserve();
    this.dev.close();
    if (this.drainTimer) {
      clearInterval(this.drainTimer);
      this.drainObserve();
      this.drainTimer = undefined;
      if (this.observeLost)
        this.log.warn({ lost: this.observeLost }, 'observation records lost (capture or ring trace fell behind)');
    }
  }
}
