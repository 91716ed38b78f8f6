/**
 * What the session asks of the data plane. The session decides *when* a ring starts, stops,
 * is enabled or sees new memory; the data plane moves frames. Issue #3 brings the real one;
 * until then `IdleDataPlane` keeps the contract and says plainly that no frame moves.
 */
import type { Logger } from 'pino';
import type { NativeBinding, NativePoller } from '../native.js';
import type { VringAddr } from './codec.js';
import type { MemoryTable } from './memory-table.js';

/** One vring as the session knows it. Index: even = receiveq, odd = transmitq (virtio §5.1.2). */
export interface Vring {
  readonly index: number;
  /** Queue size (SET_VRING_NUM). */
  num: number;
  addr: VringAddr | undefined;
  /** Next avail index to read (SET_VRING_BASE, reported by GET_VRING_BASE). */
  lastAvailIdx: number;
  /** -1 when unset; `kickPolling` when the front-end said "no fd" (poll the ring). */
  kickFd: number;
  kickPolling: boolean;
  callFd: number;
  errFd: number;
  started: boolean;
  /** As set by SET_VRING_ENABLE; see Session.isEnabled for the effective value. */
  enabled: boolean;
  broken: boolean;
}

export interface DataPlane {
  /** The ring got its first kick: process it from `lastAvailIdx` on. */
  start(ring: Vring, memory: MemoryTable): void;
  /** GET_VRING_BASE: stop processing and return the next avail index to report. */
  stop(ring: Vring): number;
  /** Effective enable state changed. */
  setEnabled(ring: Vring, enabled: boolean): void;
  /** Call fd changed (SET_VRING_CALL) while the ring may be running. */
  setCall(ring: Vring): void;
  /** Memory table is about to change: stop touching guest memory until `resume`. */
  quiesce(): void;
  resume(memory: MemoryTable): void;
  /** SEND_RARP: announce this MAC to the guest's peers. */
  sendRarp(mac: string): void;
  /** Session over: stop everything, release what it holds. */
  close(): void;
}

/**
 * The data plane of the foundation release: rings start and stop with the exact semantics of
 * the protocol, kicks are counted, but no frame is moved. Logged once per ring.
 */
export class IdleDataPlane implements DataPlane {
  readonly kicks = new Map<number, bigint>();
  private readonly watchers = new Map<number, NativePoller>();

  constructor(
    private readonly native: NativeBinding,
    private readonly log: Logger,
  ) {}

  start(ring: Vring): void {
    this.log.warn(
      { vring: ring.index, lastAvailIdx: ring.lastAvailIdx },
      'vring started; this build has no data path yet, frames are not moved',
    );
    this.watch(ring);
  }

  stop(ring: Vring): number {
    this.unwatch(ring.index);
    return ring.lastAvailIdx;
  }

  setEnabled(): void {}
  setCall(): void {}
  quiesce(): void {}
  resume(): void {}

  sendRarp(mac: string): void {
    this.log.info({ mac }, 'RARP requested; no data path yet, not sent');
  }

  close(): void {
    for (const i of [...this.watchers.keys()]) this.unwatch(i);
  }

  private watch(ring: Vring): void {
    this.unwatch(ring.index);
    if (ring.kickFd < 0) return;
    const fd = ring.kickFd;
    const p = new this.native.Poller(fd, () => {
      const v = this.native.eventfdRead(fd);
      if (v !== null) this.kicks.set(ring.index, (this.kicks.get(ring.index) ?? 0n) + v);
    });
    p.start(1);
    this.watchers.set(ring.index, p);
  }

  private unwatch(index: number): void {
    this.watchers.get(index)?.close();
    this.watchers.delete(index);
  }
}
