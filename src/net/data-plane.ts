/**
 * What the device layer offers the session. The session decides *when* a ring starts, stops,
 * is enabled or sees new memory, and pushes each decision down; the data plane moves frames
 * and reports back only through what its calls return and the events sink it was built with.
 * Two implementations: the C++ workers (native-data-plane.ts) and the TS reference
 * (ts-data-plane.ts).
 *
 *   session --start/stop/setEnabled/setCall/quiesce/resume--> DataPlane --> rings, host
 *   session <--returned positions, DataPlaneEvents.vringBroken-- DataPlane
 */
import type { Logger } from 'pino';
import type { FaultSink } from '../faults/log.js';
import type { CompiledPlan } from '../faults/plan.js';
import type { NativeBinding } from '../native.js';
import type { GuestMemoryRef } from '../virtio/guest-memory.js';
import type { JournalRecordRef } from '../virtio/ring-journal.js';
import type { DeviceCounters } from './counters.js';
import type { Steering } from './rss.js';
import type { Observers } from '../trace/observe.js';

/** A ring to run: everything the data plane needs, copied from the session's record. */
export interface RingStart {
  /** Vring index: even = receiveq, odd = transmitq (virtio 1.2 §5.1.2). */
  index: number;
  num: number;
  /** Frontend virtual addresses of the descriptor table, avail ring and used ring. */
  desc: bigint;
  avail: bigint;
  used: bigint;
  /**
   * VHOST_VRING_F_LOG: log used ring writes at this guest physical address (SET_VRING_ADDR's
   * log_guest_addr) while the dirty log is on; undefined: the vring did not ask for it.
   */
  logGuestAddr: bigint | undefined;
  /**
   * Next avail index to read. Packed rings (VIRTIO_F_RING_PACKED acked): the next descriptor,
   * position | wrap counter << 15 (vhost-user.rst "Vring state description").
   */
  lastAvailIdx: number;
  /**
   * The next used position. Split rings: used->idx as the session read it from guest memory
   * when it decided where the ring resumes (vhost-user.rst: a restarted backend continues from
   * there). Packed rings: position | wrap counter << 15, as the session was told (a packed ring
   * keeps none in memory). The data plane takes it as given.
   */
  usedIdx: number;
  /** -1: no kick fd, poll the ring. */
  kickFd: number;
  callFd: number;
  /** The effective enable state (the session applies vhost-user.rst "Ring states"). */
  enabled: boolean;
  /** Packed rings with `--ring-state`: the ring's record, written at each flush. */
  journal?: JournalRecordRef;
}

/** Where a ring is: the next avail entry to read, the next used entry to publish. */
export interface RingPosition {
  lastAvailIdx: number;
  usedIdx: number;
}

/** What the data plane reports on its own (built in: no callbacks are written into it later). */
export interface DataPlaneEvents {
  /** A driver violation stopped this vring (a RingError name); reported once per start. */
  vringBroken(index: number, error: string): void;
}

/** The dirty log as mapped by the session: a native mapping of `size` bytes. */
export interface DirtyLogArea {
  mappingId: number;
  size: number;
}

/** The memory table as the data plane reads it (the session's MemoryTable satisfies this). */
export interface GuestMemorySource {
  readonly regions: readonly { mappingId: number; guestAddr: bigint; size: bigint; userAddr: bigint }[];
  /** A TS view of every region (the TS data plane's guest memory). */
  refView(): GuestMemoryRef;
}

export interface DataPlane {
  /** Per-vring counters (frames, bytes, drops by reason, kicks, notifications). */
  readonly counters: DeviceCounters;
  /**
   * SET_FEATURES: the acked virtio features (header size, EVENT_IDX, offloads; VHOST_F_LOG_ALL
   * turns the dirty log on). Running rings are quiesced, switched and resumed.
   */
  setFeatures(features: bigint): void;
  /**
   * SET_LOG_BASE: the dirty log area (a mapping the session owns), or none. When this returns
   * nothing writes the previous area any more.
   */
  setLog(log: DirtyLogArea | undefined): void;
  /** SET_VRING_ADDR on a running ring that only turns VHOST_VRING_F_LOG on or off. */
  setRingLog(index: number, logGuestAddr: bigint | undefined): void;
  /** The ring got its first kick: process it from `lastAvailIdx` on. */
  start(ring: RingStart, memory: GuestMemorySource): void;
  /** GET_VRING_BASE and friends: stop the ring and return where it stopped. */
  stop(index: number): RingPosition;
  /** Where every ring is now (running rings as last published), by vring index. */
  positions(): RingPosition[];
  /** The effective enable state of a started ring changed. */
  setEnabled(index: number, enabled: boolean): void;
  /** SET_VRING_CALL while the ring may be running. */
  setCall(index: number, callFd: number): void;
  /** The memory table is about to change: stop touching guest memory until `resume`. */
  quiesce(): void;
  resume(memory: GuestMemorySource): void;
  /**
   * A compiled fault plan to apply from now on (undefined: none), reporting every injected
   * fault to `sink`. Event counts start again from zero.
   */
  setFaults(plan: CompiledPlan | undefined, sink: FaultSink | undefined): void;
  /** Receive steering from now on (SIGHUP reload): learned flows are forgotten. */
  setSteering(steering: Steering): void;
  /**
   * The observers from now on (SIGHUP reload: a new capture file or ring trace, or either off):
   * what was recorded before goes to the previous ones first; the caller closes those after.
   */
  setObservers(observe: Observers): void;
  /** SEND_RARP: the guest moved (migration) and asks us to announce `mac`. */
  sendRarp(mac: string): void;
  /** NET_SET_MTU: the guest's MTU, for the host interface when it is ours. */
  setHostMtu(mtu: number): void;
  /** Session over: stop everything, release what it holds. */
  close(): void;
}

/** What the owner of a session tunes on its data plane; the protocol drives none of it. */
export type DataPlaneTuning = Pick<DataPlane, 'setFaults' | 'setSteering' | 'setObservers'>;

/** Builds a session's data plane; the session hands in its events sink. */
export type DataPlaneFactory = (native: NativeBinding, log: Logger, events: DataPlaneEvents) => DataPlane;
