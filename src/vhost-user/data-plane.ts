/**
 * What the session asks of the data plane. The session decides *when* a ring starts, stops,
 * is enabled or sees new memory; the data plane moves frames. Two implementations: the C++
 * workers (src/net/native-data-plane.ts) and the TS reference (src/net/ts-data-plane.ts).
 */
import type { DeviceCounters } from '../net/counters.js';
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
  /** Per-vring counters (frames, bytes, drops by reason, kicks, notifications). */
  readonly counters: DeviceCounters;
  /** Effective enable state of a ring (the session's rule), set by the session. */
  isEnabled: (ring: Vring) => boolean;
  /** Told when a ring breaks (driver violation), so the session can mark it. */
  onBroken: (index: number, error: string) => void;
  /** SET_FEATURES: the acked virtio features (header size, EVENT_IDX, offloads). */
  setFeatures(features: bigint): void;
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
