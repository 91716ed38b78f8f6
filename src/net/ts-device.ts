/**
 * What the TS queue pairs read while they run: the twin of native/device_config.h DeviceConfig
 * (features, header size, guest memory, the dirty log, counters, observers, the fault plan's
 * rule tables) and of native/steering.h (which receiveq a frame takes). The TS data plane
 * (ts-data-plane.ts) owns it and changes it between frames; the pairs only read it, and count.
 */
import type { Logger } from 'pino';
import { hasFeature, VirtioFeature as F } from '../features.js';
import { VringFaults } from '../faults/engine.js';
import type { FaultSink } from '../faults/log.js';
import type { CompiledPlan } from '../faults/plan.js';
import type { PairRules } from '../faults/pair-faults.js';
import type { NativeBinding } from '../native.js';
import type { Observers } from '../trace/observe.js';
import type { DirtyLog } from '../virtio/dirty-log.js';
import type { GuestMemoryRef } from '../virtio/guest-memory.js';
import type { DeviceCounters } from './counters.js';
import type { DataPlaneEvents } from './data-plane.js';
import { defaultRss, flowInput, reverseFlowInput, type Steering, toeplitz } from './rss.js';
import { headerLen } from './rules.js';

/** A fault plan in force: its rule tables per vring and where its lies are logged. */
interface PlanInForce {
  plan: CompiledPlan;
  vrings: VringFaults[];
  sink: FaultSink | undefined;
  startMs: number;
}

export class TsDevice {
  features = 0n;
  hdrLen = 12;
  /** Guest memory; undefined while the memory table changes (quiesce). */
  mem: GuestMemoryRef | undefined;
  /** The dirty log area (SET_LOG_BASE); marked while VHOST_F_LOG_ALL is acked (`dirty`). */
  logArea: DirtyLog | undefined;
  observe: Observers = {};
  /** The vring this thread's guest-memory faults are charged to now (-1: none). */
  chargedTo = -1;
  private plan: PlanInForce | undefined;

  constructor(
    readonly native: NativeBinding,
    readonly log: Logger,
    readonly events: DataPlaneEvents,
    readonly counters: DeviceCounters,
    readonly steering: TsSteering,
  ) {}

  setFeatures(features: bigint): void {
    this.features = features;
    this.hdrLen = headerLen(features);
  }

  has(bit: bigint): boolean {
    return hasFeature(this.features, bit);
  }

  /** The dirty log in force: an area, and VHOST_F_LOG_ALL acked. */
  get dirty(): DirtyLog | undefined {
    return this.has(F.VHOST_F_LOG_ALL) ? this.logArea : undefined;
  }

  /** A frame the fault room dropped (its FaultDevice view). */
  count(vring: number, slot: 'dropNoBuffers' | 'dropTooBig'): void {
    this.counters.add(vring, slot);
  }

  /** A plan from now on (undefined: none); event counts start again from zero. */
  setPlan(plan: CompiledPlan | undefined, sink: FaultSink | undefined, vrings: number, startMs: number): void {
    this.plan = plan ? { plan, vrings: VringFaults.forVrings(plan, vrings, startMs), sink, startMs } : undefined;
  }

  get compiledPlan(): CompiledPlan | undefined {
    return this.plan?.plan;
  }

  /** Vring v's rules, or undefined when the plan has none for it (native FaultsOf). */
  faultsOf(v: number): VringFaults | undefined {
    const f = this.plan?.vrings[v];
    return f?.any ? f : undefined;
  }

  /** What pair p's fault room attaches to (undefined: no rule for either vring). */
  rulesOf(p: number): PairRules | undefined {
    const rules: PairRules['rules'] = [this.faultsOf(2 * p), this.faultsOf(2 * p + 1)];
    if (!this.plan || (!rules[0] && !rules[1])) return undefined;
    return { rules, sink: this.plan.sink, startMs: this.plan.startMs };
  }
}

/** Which receiveq a frame from the host takes (native/steering.h Target, RecordFlow). */
export class TsSteering {
  private steering: Steering;
  /** Flow affinity: the pair each flow was last sent on, by the hash of its replies. */
  private readonly flows = new Map<number, number>();

  constructor(
    private readonly pairs: number,
    steering: Steering | undefined,
  ) {
    this.steering = steering ?? { policy: 'none', rss: defaultRss(pairs) };
  }

  get flowAffinity(): boolean {
    return this.steering.policy === 'flow-affinity';
  }

  set(steering: Steering): void {
    this.steering = steering;
    this.flows.clear();
  }

  /** The pair whose receiveq takes `frame` arriving on `pair`; a disabled target keeps it here. */
  target(pair: number, frame: Buffer, hdrLen: number, enabled: (pair: number) => boolean): number {
    const { policy, rss } = this.steering;
    if (policy === 'none' || this.pairs === 1 || frame.length <= hdrLen) return pair;
    const { input, type } = flowInput(frame.subarray(hdrLen));
    if (type === 'none') return pair;
    const h = toeplitz(rss.key, input);
    let target = rss.table[h % rss.table.length] ?? pair;
    if (policy === 'flow-affinity') target = this.flows.get(h) ?? target;
    return enabled(target) ? target : pair;
  }

  /** A frame the guest sent on `pair`: its replies will take that pair (flow affinity). */
  recordFlow(pair: number, frame: Buffer, hdrLen: number): void {
    const { input, type } = flowInput(frame.subarray(hdrLen));
    if (type !== 'none') this.flows.set(toeplitz(this.steering.rss.key, reverseFlowInput(input)), pair);
  }
}
