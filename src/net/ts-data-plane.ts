/**
 * The learning data plane (`--datapath ts`): the TS reference rings (src/virtio/) moving real
 * frames, one JS call per packet, on the main thread. Slow on purpose: every step is readable
 * and traceable. Same device semantics as the C++ workers. This file keeps the DataPlane
 * contract and hands each call to the queue pair it is about (queue-pair.ts, the twin of
 * native/queue_pair.h); what the pairs read while they run is the device (ts-device.ts).
 */
import type { Logger } from 'pino';
import { applyHostMtu, type OpenHostBackend } from '../host/host-backend.js';
import type { NativeBinding } from '../native.js';
import { faultEvent, type FaultSink } from '../faults/log.js';
import type { CompiledPlan } from '../faults/plan.js';
import type { Direction } from '../faults/pair-faults.js';
import type { Observers } from '../trace/observe.js';
import { DirtyLog } from '../virtio/dirty-log.js';
import { DeviceCounters } from './counters.js';
import type {
  DataPlane,
  DataPlaneEvents,
  DirtyLogArea,
  GuestMemorySource,
  RingPosition,
  RingStart,
} from './data-plane.js';
import { makeHostPort } from './host-ports.js';
import { QueuePair } from './queue-pair.js';
import { ANNOUNCE_GAPS_MS, Announcer } from './rarp.js';
import type { Steering } from './rss.js';
import { tapOffloads } from './rules.js';
import { TsDevice, TsSteering } from './ts-device.js';

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
  private readonly device: TsDevice;
  private readonly pairs: QueuePair[] = [];
  private readonly host: OpenHostBackend;
  /** Session start: a fault's `t` counts from here. */
  private readonly startMs = performance.now();

  constructor(
    private readonly native: NativeBinding,
    options: TsDataPlaneOptions,
    private readonly log: Logger,
    events: DataPlaneEvents,
  ) {
    this.queuePairs = options.queuePairs;
    this.host = options.host;
    this.counters = new DeviceCounters(options.queuePairs * 2);
    const steering = new TsSteering(options.queuePairs, options.steering);
    this.device = new TsDevice(native, log, events, this.counters, steering);
    this.device.observe = options.observe ?? {};
    for (let p = 0; p < options.queuePairs; p++)
      this.pairs.push(
        new QueuePair(p, this.device, makeHostPort(native, options.host.spec, options.host.fds[p]), this.pairs),
      );
  }

  /** The pair vring `index` belongs to, and which of its two vrings it is. */
  private of(index: number): [QueuePair | undefined, Direction] {
    return [this.pairs[index >> 1], (index & 1) as Direction];
  }

  setObservers(observe: Observers): void {
    // Frame by frame, step by step: nothing is pending; the rings take the new ring trace.
    this.device.observe = { ...observe };
    for (const p of this.pairs) p.reattach();
  }

  setSteering(steering: Steering): void {
    this.device.steering.set(steering);
  }

  setLog(log: DirtyLogArea | undefined): void {
    // Single-threaded: no write is in flight; the rings take the new area now.
    this.device.logArea = log ? new DirtyLog(new Uint8Array(this.native.mappingBuffer(log.mappingId))) : undefined;
    for (const p of this.pairs) p.setDirtyLog();
  }

  setRingLog(index: number, logGuestAddr: bigint | undefined): void {
    const [pair, d] = this.of(index);
    pair?.setRingLog(d, logGuestAddr);
  }

  setFeatures(features: bigint): void {
    this.device.setFeatures(features);
    for (const p of this.pairs) {
      p.port.configure(this.device.hdrLen, tapOffloads(features));
      p.reattach();
    }
  }

  start(start: RingStart, memory: GuestMemorySource): void {
    if (!this.device.mem) this.resume(memory);
    this.of(start.index)[0]?.start(start);
  }

  stop(index: number): RingPosition {
    const pair = this.pairs[index >> 1];
    return pair ? pair.teardown(index) : { lastAvailIdx: 0, usedIdx: 0 };
  }

  positions(): RingPosition[] {
    return this.pairs.flatMap((p) => [p.position(0), p.position(1)]);
  }

  setEnabled(index: number, enabled: boolean): void {
    const [pair, d] = this.of(index);
    pair?.setEnabled(d, enabled);
  }

  setCall(index: number, callFd: number): void {
    const [pair, d] = this.of(index);
    pair?.setCall(d, callFd);
  }

  quiesce(): void {
    // Single-threaded: nothing runs while the memory table changes. Views die with mappings.
    this.device.mem = undefined;
  }

  resume(memory: GuestMemorySource): void {
    this.device.mem = memory.refView();
    for (const p of this.pairs) p.reattach();
  }

  setHostMtu(mtu: number): void {
    applyHostMtu(this.host, mtu, this.log);
  }

  setFaults(plan: CompiledPlan | undefined, sink: FaultSink | undefined): void {
    // Each fault is also a ring trace event, next to the steps it changed.
    const trace = this.device.observe.ringTrace;
    const traced: FaultSink | undefined =
      sink && trace
        ? {
            record: (e) => {
              sink.record(e);
              trace.record(e.vring, faultEvent(plan, e));
            },
          }
        : sink;
    this.device.setPlan(plan, traced, this.queuePairs * 2, this.startMs);
    // IN_ORDER batching is on only for transmitqs without rules: the rings learn of the plan.
    for (const p of this.pairs) {
      p.attachFaults();
      p.reattach();
    }
  }

  sendRarp(mac: string): void {
    this.log.info({ mac, rounds: ANNOUNCE_GAPS_MS.length }, 'SEND_RARP: announcing the guest MAC (RARP)');
    this.announcer.announce(mac);
  }

  /** SEND_RARP's frames, out of pair 0's host port (not to the guest: a loopback port drops them). */
  private readonly announcer = new Announcer((frame) => {
    try {
      this.pairs[0]?.port.send(Buffer.concat([Buffer.alloc(this.device.hdrLen), frame]));
    } catch (err) {
      this.log.warn({ err }, 'SEND_RARP: the announce frame could not be sent');
    }
  });

  close(): void {
    this.announcer.cancel();
    for (const p of this.pairs) p.close();
  }
}
