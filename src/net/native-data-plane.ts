/**
 * The production data plane: one C++ worker thread per queue pair (native/net_device.cc).
 * Every call here is control plane (ring start/stop, memory, features); frames never cross
 * into JS.
 */
import type { Logger } from 'pino';
import { hex } from '../features.js';
import type { OpenHostBackend } from '../host/host-backend.js';
import { HostKindCode, type NativeBinding, type NativeNetDevice } from '../native.js';
import type { DataPlane, Vring } from '../vhost-user/data-plane.js';
import type { MemoryTable } from '../vhost-user/memory-table.js';
import { ringErrorName } from '../virtio/ring-errors.js';
import { type CapturedFrame, type ObserveRecord, type Observers, records } from '../trace/observe.js';
import { DeviceCounters } from './counters.js';
import { defaultRss, STEERING_CODE, type Steering } from './rss.js';

const timeOf = (r: ObserveRecord): bigint => (r.kind === 'frame' ? r.frame.timeNs : r.timeNs);

/** How often the observation rings are drained (when capture or the ring trace is on). */
const DRAIN_MS = 20;

export class NativeDataPlane implements DataPlane {
  readonly counters: DeviceCounters;
  private readonly dev: NativeNetDevice;
  private readonly broken = new Set<number>();
  /** Set by the session: the effective enable state of a ring. */
  isEnabled: (ring: Vring) => boolean = (r) => r.enabled;
  onBroken: (index: number, error: string) => void = () => {};

  constructor(
    native: NativeBinding,
    queuePairs: number,
    host: OpenHostBackend,
    private readonly log: Logger,
    steering: Steering = { policy: 'none', rss: defaultRss(queuePairs) },
    cpus: number[] = [],
    threadOf?: number[],
    pollUs = 0,
    private readonly observe: Observers = {},
  ) {
    this.counters = new DeviceCounters(queuePairs * 2);
    this.dev = new native.NetDevice(queuePairs, this.counters.array, (vring, _code, name) => {
      // A driver violation: the queue is marked broken; logged once, then only counted.
      if (this.broken.has(vring)) return;
      this.broken.add(vring);
      this.log.error({ vring, error: name }, 'vring broken by a driver violation; this queue stops, the others go on');
      this.onBroken(vring, name);
    });
    if (cpus.length) this.dev.setCpus(cpus);
    if (threadOf) this.dev.setThreads(threadOf);
    if (pollUs) this.dev.setPoll(pollUs);
    this.dev.setSteering(STEERING_CODE[steering.policy], Buffer.from(steering.rss.key), steering.rss.table);
    this.dev.setHost(
      HostKindCode[host.spec.kind],
      host.fds,
      host.spec.kind === 'null' ? (host.spec.sourceLen ?? 0) : 0,
    );
    if (observe.capture || observe.ringTrace) {
      // Workers write records into per-vring rings; this thread drains them in bursts.
      const vrings = queuePairs * 2;
      this.dev.setObserve({
        capture: !!observe.capture,
        trace: !!observe.ringTrace,
        snapLen: observe.capture?.snapLen,
        bytes: Math.max(256 << 10, Math.min(4 << 20, Math.floor((128 << 20) / vrings))),
      });
      this.drainBuf = Buffer.allocUnsafe(1 << 20);
      this.drainTimer = setInterval(() => this.drainObserve(), DRAIN_MS);
      this.drainTimer.unref();
    }
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
        if (r.kind === 'frame') frames.push(r.frame);
        else ringTrace?.record(r.vring, r.event, Number(r.timeNs / 1000n) / 1000);
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
    this.dev.setFeatures(features);
  }

  start(ring: Vring, memory: MemoryTable): void {
    if (!ring.addr) {
      this.log.error({ vring: ring.index }, 'vring started without SET_VRING_ADDR; not processed');
      return;
    }
    this.resume(memory);
    this.broken.delete(ring.index);
    this.dev.startQueue(ring.index, {
      num: ring.num,
      desc: ring.addr.descUserAddr,
      avail: ring.addr.availUserAddr,
      used: ring.addr.usedUserAddr,
      lastAvailIdx: ring.lastAvailIdx,
      usedIdx: -1,
      kickFd: ring.kickPolling ? -1 : ring.kickFd,
      callFd: ring.callFd,
      enabled: this.isEnabled(ring),
    });
    this.log.info(
      { vring: ring.index, num: ring.num, lastAvailIdx: ring.lastAvailIdx, desc: hex(ring.addr.descUserAddr) },
      'vring processing',
    );
  }

  stop(ring: Vring): number {
    const r = this.dev.stopQueue(ring.index);
    if (r.broken) this.log.warn({ vring: ring.index, error: ringErrorName(r.error) }, 'stopped a broken vring');
    return r.lastAvailIdx;
  }

  setEnabled(ring: Vring, enabled: boolean): void {
    this.dev.setEnabled(ring.index, enabled);
  }

  setCall(ring: Vring): void {
    this.dev.setCall(ring.index, ring.callFd);
  }

  quiesce(): void {
    this.dev.pause();
  }

  resume(memory: MemoryTable): void {
    this.dev.setMemory(
      memory.regions.map((r) => ({ mappingId: r.mappingId, gpa: r.guestAddr, size: r.size, va: r.userAddr })),
    );
    this.dev.resume();
  }

  sendRarp(mac: string): void {
    this.log.info({ mac }, 'RARP requested (announcing is left to the guest: GUEST_ANNOUNCE is not offered)');
  }

  close(): void {
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
