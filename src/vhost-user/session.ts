/**
 * The session: what the messages mean. One method per request, named after it, each
 * idempotent (QEMU repeats most messages once per queue pair). Syntax was checked by the
 * codec and the handler table before any of these run.
 */
import type { Logger } from 'pino';
import { ErrorCode, FeatureError, SessionError } from '../errors.js';
import { featureMask, featureNames, hasFeature, hex, ProtocolFeature, VirtioFeature } from '../features.js';
import type { NativeBinding, NativePoller } from '../native.js';
import type { VringCounters } from '../net/counters.js';
import type { DataPlane, DataPlaneFactory, DataPlaneTuning, RingPosition } from '../net/data-plane.js';
import type { LogDescription, MemRegion, MemTable, VringAddr, VringState } from './codec.js';
import { decideResume, RecordState, type RingJournal } from '../virtio/ring-journal.js';
import type { LintFinding } from './lint.js';
import { checkLogArea, type MappedRegion, MAX_MEM_SLOTS, MemoryTable } from './memory-table.js';

/** One vring as the session knows it. Index: even = receiveq, odd = transmitq (virtio §5.1.2). */
export interface Vring {
  readonly index: number;
  /** Queue size (SET_VRING_NUM). */
  num: number;
  addr: VringAddr | undefined;
  /**
   * Next avail index to read: set by SET_VRING_BASE, and from what the data plane returns when
   * the ring stops (reported by GET_VRING_BASE). While the ring runs, the data plane owns it.
   */
  lastAvailIdx: number;
  /**
   * Packed rings: the next used position (a packed ring keeps none in memory), from the high
   * half of SET_VRING_BASE and from the data plane when the ring stops.
   */
  usedIdx: number;
  /**
   * Packed rings: SET_VRING_BASE as the front-end gave it, kept for the ring journal (a
   * front-end that lost the position sends it again after a backend crash).
   */
  givenBase: number | undefined;
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

/** A vring as readers outside the session see it (status, metrics, the ring page). */
export interface VringView {
  index: number;
  /** `receiveqN` or `transmitqN`. */
  queue: string;
  num: number;
  addr: VringAddr | undefined;
  started: boolean;
  /** The effective enable state. */
  enabled: boolean;
  broken: boolean;
  /** Where the ring is: the data plane's position while it runs, the stopped one otherwise. */
  position: RingPosition;
  counters: VringCounters;
}

/** The session as readers outside it see it: values, no handles on its objects. */
export interface SessionView {
  queuePairs: number;
  offeredFeatures: bigint;
  ackedFeatures: bigint | undefined;
  /** VIRTIO_F_RING_PACKED acked: the rings are packed (positions are position | wrap << 15). */
  packed: boolean;
  ackedProtocolFeatures: bigint;
  status: number;
  mtu: number | undefined;
  lint: Record<string, number>;
  memory: { guestAddr: bigint; size: bigint; userAddr: bigint; refs: number; sealed: boolean }[];
  /**
   * The dirty log (live migration): its size, and whether the device marks it now
   * (VHOST_F_LOG_ALL acked); undefined before SET_LOG_BASE.
   */
  dirtyLog: { bytes: number; logging: boolean } | undefined;
  vrings: VringView[];
  /** The memory table as a TS view, for reading rings (the ring page); throws when unmapped. */
  memoryView: MemoryTable['refView'];
}

/** `receiveqN` / `transmitqN` for vring `index` (virtio 1.2 §5.1.2). */
export function queueName(index: number): string {
  return `${index % 2 === 0 ? 'receiveq' : 'transmitq'}${index >> 1}`;
}

export interface SessionOptions {
  queuePairs: number;
  /** Virtio features offered by GET_FEATURES. */
  features: bigint;
  /** Protocol features offered by GET_PROTOCOL_FEATURES. */
  protocolFeatures: bigint;
  /** `--ring packed`: a driver that does not ack VIRTIO_F_RING_PACKED is refused. */
  requirePacked?: boolean;
  /**
   * `--ring-state`: where packed rings keep their positions outside the process, so a restarted
   * backend resumes them (ring-journal.ts). The backend owns it; sessions share it.
   */
  journal?: RingJournal;
}

/** A change of session state worth telling a reader (logs, traces, tests). */
export interface SessionChange {
  what: string;
  vring?: number;
  [k: string]: unknown;
}

/** virtio 1.2 §2.7: split queue size is a power of 2, at most 32768. */
export const MAX_QUEUE_SIZE = 32768;

/** Protocol features this backend implements; nothing else is offered. */
export const OFFERED_PROTOCOL_FEATURES = featureMask(
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.NET_MTU,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.RARP,
  ProtocolFeature.STATUS,
  ProtocolFeature.RESET_DEVICE,
);

/**
 * Virtio features the device offers: what the data path implements. Offloads pass through
 * the virtio-net header to the host (TAP IFF_VNET_HDR, AF_PACKET PACKET_VNET_HDR); UFO and USO
 * are left out (Linux guests no longer use UFO; QEMU 7.2 does not know USO).
 */
export const OFFERED_FEATURES = featureMask(
  VirtioFeature.F_VERSION_1,
  VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES,
  VirtioFeature.NET_F_MTU,
  VirtioFeature.NET_F_MRG_RXBUF,
  VirtioFeature.RING_F_EVENT_IDX,
  VirtioFeature.RING_F_INDIRECT_DESC,
  VirtioFeature.F_NOTIFY_ON_EMPTY,
  VirtioFeature.F_ANY_LAYOUT,
  VirtioFeature.NET_F_CSUM,
  VirtioFeature.NET_F_GUEST_CSUM,
  VirtioFeature.NET_F_HOST_TSO4,
  VirtioFeature.NET_F_HOST_TSO6,
  VirtioFeature.NET_F_HOST_ECN,
  VirtioFeature.NET_F_GUEST_TSO4,
  VirtioFeature.NET_F_GUEST_TSO6,
  VirtioFeature.NET_F_GUEST_ECN,
  VirtioFeature.VHOST_F_LOG_ALL,
  // §2.7.9, §2.8.9: buffers are used in the order they were made available (both layouts).
  VirtioFeature.F_IN_ORDER,
);

/**
 * Features for a device with `queuePairs` queue pairs: NET_F_MQ joins when there is more than
 * one. Front-ends take MQ from this offer: QEMU's vhost-user net keeps it only when the backend
 * offers it (and runs the control queue itself), DPDK's virtio_user reads it to learn that it
 * may use more than one pair.
 */
export function offeredFeatures(queuePairs: number, ring: RingLayout = 'auto'): bigint {
  let f = OFFERED_FEATURES;
  if (queuePairs > 1) f |= featureMask(VirtioFeature.NET_F_MQ);
  if (ring !== 'split') f |= featureMask(VirtioFeature.F_RING_PACKED);
  return f;
}

/**
 * Which ring layouts are offered (`--ring`): split only; auto (packed offered, the driver
 * chooses); packed (offered and required).
 */
export type RingLayout = 'split' | 'packed' | 'auto';

/** VHOST_VRING_F_LOG (bit 0 of SET_VRING_ADDR's flags): the used ring is logged. */
export const VRING_F_LOG = 1;

/** Where the used ring of `a` is logged, or undefined when it did not ask (VRING_F_LOG). */
function usedLogAddr(a: VringAddr): bigint | undefined {
  return a.flags & VRING_F_LOG ? a.logGuestAddr : undefined;
}

function newVring(index: number): Vring {
  return {
    index,
    num: 0,
    addr: undefined,
    lastAvailIdx: 0,
    usedIdx: 0,
    givenBase: undefined,
    kickFd: -1,
    kickPolling: false,
    callFd: -1,
    errFd: -1,
    started: false,
    enabled: false,
    broken: false,
  };
}

export class Session {
  readonly memory: MemoryTable;
  readonly vrings: Vring[];
  owner = false;
  /** Acked virtio features; undefined until SET_FEATURES. */
  ackedFeatures: bigint | undefined;
  ackedProtocolFeatures = 0n;
  /** SET_PROTOCOL_FEATURES was received (lint: SET_VRING_ENABLE must come after it). */
  protocolFeaturesSet = false;
  /** Lint findings by rule, this session. */
  readonly lint = new Map<string, number>();
  status = 0;
  mtu: number | undefined;
  rarpMac: string | undefined;
  /** The dirty log mapping (SET_LOG_BASE) and the log fd (SET_LOG_FD), while set. */
  private dirtyLog: { mappingId: number; size: number } | undefined;
  private logFd = -1;
  private readonly kickWatchers = new Map<number, NativePoller>();
  /** Mappings already reported as unsealed (the warning is said once per region). */
  private readonly warnedUnsealed = new Set<number>();
  private readonly listeners: ((c: SessionChange) => void)[] = [];
  private readonly dataPlane: DataPlane;
  /** Vrings handed to the data plane (started with an address). */
  private readonly running = new Set<number>();

  constructor(
    private readonly native: NativeBinding,
    readonly options: SessionOptions,
    makeDataPlane: DataPlaneFactory,
    private readonly log: Logger,
  ) {
    this.memory = new MemoryTable(native);
    this.vrings = Array.from({ length: options.queuePairs * 2 }, (_, i) => newVring(i));
    this.dataPlane = makeDataPlane(native, log.child({ component: 'dataplane' }), {
      vringBroken: (index, error) => {
        const v = this.vrings[index];
        if (v) v.broken = true;
        this.changed({ what: 'vring broken', vring: index, error });
      },
    });
  }

  /**
   * What the session's owner tunes on this session's data plane (fault plan, steering,
   * observers): the protocol drives none of it, so the session only hands it out.
   */
  get tuning(): DataPlaneTuning {
    return this.dataPlane;
  }

  /** Counters of vring `index` (read from the data plane's shared counters, no native call). */
  counters(index: number): VringCounters {
    return this.dataPlane.counters.vring(index);
  }

  /** What readers outside the session may see of it. */
  view(): SessionView {
    const positions = this.dataPlane.positions();
    return {
      queuePairs: this.options.queuePairs,
      offeredFeatures: this.options.features,
      ackedFeatures: this.ackedFeatures,
      packed: this.packed(),
      ackedProtocolFeatures: this.ackedProtocolFeatures,
      status: this.status,
      mtu: this.mtu,
      lint: Object.fromEntries(this.lint),
      memory: this.memory.regions.map((r) => ({
        guestAddr: r.guestAddr,
        size: r.size,
        userAddr: r.userAddr,
        refs: r.refs,
        sealed: r.sealed,
      })),
      dirtyLog: this.dirtyLog && { bytes: this.dirtyLog.size, logging: this.logging() },
      vrings: this.vrings.map((v) => ({
        index: v.index,
        queue: queueName(v.index),
        num: v.num,
        addr: v.addr,
        started: v.started,
        enabled: this.isEnabled(v),
        broken: v.broken,
        position: v.started
          ? (positions[v.index] ?? { lastAvailIdx: v.lastAvailIdx, usedIdx: 0 })
          : { lastAvailIdx: v.lastAvailIdx, usedIdx: this.packed() ? v.usedIdx : (positions[v.index]?.usedIdx ?? 0) },
        counters: this.counters(v.index),
      })),
      memoryView: () => this.memory.refView(),
    };
  }

  onChange(fn: (c: SessionChange) => void): void {
    this.listeners.push(fn);
  }

  /** Counts a lint finding; the first of each rule is logged and becomes a change. */
  reportLint(f: LintFinding): void {
    const n = (this.lint.get(f.rule) ?? 0) + 1;
    this.lint.set(f.rule, n);
    if (n === 1) {
      this.log.warn({ rule: f.rule, section: f.section, request: f.request }, `lint: ${f.text}`);
      this.changed({ what: 'lint', rule: f.rule, section: f.section, request: f.request });
    }
  }

  private changed(c: SessionChange): void {
    for (const fn of this.listeners) fn(c);
  }

  /** True when the protocol feature bit was both offered and acked. */
  hasProtocolFeature(bit: bigint): boolean {
    return hasFeature(this.ackedProtocolFeatures, bit);
  }

  /**
   * vhost-user.rst "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES a ring starts
   * enabled; with it, a ring starts disabled and only SET_VRING_ENABLE enables it.
   */
  isEnabled(ring: Vring): boolean {
    const pf =
      this.ackedFeatures !== undefined && hasFeature(this.ackedFeatures, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
    return pf ? ring.enabled : true;
  }

  vring(index: number): Vring {
    const v = this.vrings[index];
    if (!v) throw new SessionError(ErrorCode.BadField, `vring ${index} out of range`, {}, 'close-connection');
    return v;
  }

  // --- features -------------------------------------------------------------------------

  getFeatures(): bigint {
    return this.options.features;
  }

  setFeatures(features: bigint): void {
    const extra = features & ~this.options.features;
    if (extra !== 0n) {
      throw new FeatureError(ErrorCode.FeatureNotOffered, 'SET_FEATURES acks features never offered', {
        extra: featureNames(extra, VirtioFeature),
        features: hex(features),
      });
    }
    const packed = hasFeature(features, VirtioFeature.F_RING_PACKED);
    if (this.options.requirePacked && !packed) {
      throw new FeatureError(ErrorCode.FeatureRequired, 'SET_FEATURES without VIRTIO_F_RING_PACKED (--ring packed)', {
        features: hex(features),
      });
    }
    if (this.ackedFeatures !== undefined && this.packed() !== packed && this.vrings.some((v) => v.started)) {
      throw new FeatureError(
        ErrorCode.FeatureRingLayoutChanged,
        'SET_FEATURES changes the ring layout while a ring runs',
        {
          features: hex(features),
        },
      );
    }
    const before = this.vrings.map((v) => this.isEnabled(v));
    if (this.ackedFeatures !== features) {
      this.ackedFeatures = features;
      this.changed({ what: 'features acked', features: hex(features), names: featureNames(features, VirtioFeature) });
    }
    this.dataPlane.setFeatures(features);
    this.vrings.forEach((v, i) => {
      if (v.started && before[i] !== this.isEnabled(v)) this.dataPlane.setEnabled(v.index, this.isEnabled(v));
    });
  }

  getProtocolFeatures(): bigint {
    return this.options.protocolFeatures;
  }

  setProtocolFeatures(features: bigint): void {
    const extra = features & ~this.options.protocolFeatures;
    if (extra !== 0n) {
      throw new FeatureError(ErrorCode.ProtocolFeatureNotOffered, 'SET_PROTOCOL_FEATURES acks features never offered', {
        extra: featureNames(extra, ProtocolFeature),
        features: hex(features),
      });
    }
    this.protocolFeaturesSet = true;
    if (this.ackedProtocolFeatures !== features) {
      this.ackedProtocolFeatures = features;
      this.changed({
        what: 'protocol features acked',
        features: hex(features),
        names: featureNames(features, ProtocolFeature),
      });
    }
  }

  getQueueNum(): bigint {
    return BigInt(this.options.queuePairs);
  }

  // --- ownership and reset --------------------------------------------------------------

  setOwner(): void {
    if (!this.owner) {
      this.owner = true;
      this.changed({ what: 'owner set' });
    }
  }

  /** RESET_OWNER (deprecated) and RESET_DEVICE: rings stopped and forgotten, features cleared. */
  resetDevice(): void {
    for (const v of this.vrings) {
      this.resetVring(v);
      this.options.journal?.clear(v.index);
    }
    this.ackedFeatures = undefined;
    this.status = 0;
    this.changed({ what: 'device reset' });
  }

  // --- memory ---------------------------------------------------------------------------

  /**
   * Runs `fn` with the data plane kept off guest memory: the handler table's quiesce column
   * (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG) wraps those handlers in this.
   */
  quiesced<T>(fn: () => T): T {
    this.dataPlane.quiesce();
    try {
      return fn();
    } finally {
      this.dataPlane.resume(this.memory);
    }
  }

  setMemTable(table: MemTable, fds: number[]): void {
    this.memory.replace(table.regions, fds);
    this.changed({ what: 'memory table set', regions: table.nregions });
    for (const r of this.memory.regions) this.warnUnsealed(r);
  }

  /** Says, once per mapping, that the front-end could shrink a region's file under us. */
  private warnUnsealed(r: MappedRegion): void {
    if (r.sealed || this.warnedUnsealed.has(r.mappingId)) return;
    this.warnedUnsealed.add(r.mappingId);
    this.changed({ what: 'memory region not sealed', guestAddr: hex(r.guestAddr), size: hex(r.size) });
    this.log.warn(
      { guestAddr: hex(r.guestAddr), size: hex(r.size) },
      "memory region's file is not sealed against shrinking: a front-end that shrinks it makes the next access fault (SIGBUS)",
    );
  }

  getMaxMemSlots(): bigint {
    return BigInt(MAX_MEM_SLOTS);
  }

  addMemReg(region: MemRegion, fd: number): void {
    this.warnUnsealed(this.memory.add(region, fd));
    this.changed({ what: 'memory region added', guestAddr: hex(region.guestAddr), size: hex(region.size) });
  }

  remMemReg(region: MemRegion): void {
    this.memory.remove(region);
    this.changed({ what: 'memory region removed', guestAddr: hex(region.guestAddr), size: hex(region.size) });
  }

  // --- dirty log (live migration) -------------------------------------------------------

  /** Whether the device marks the dirty log now: an area, and VHOST_F_LOG_ALL acked. */
  logging(): boolean {
    return (
      this.dirtyLog !== undefined &&
      this.ackedFeatures !== undefined &&
      hasFeature(this.ackedFeatures, VirtioFeature.VHOST_F_LOG_ALL)
    );
  }

  /**
   * SET_LOG_BASE: map the log (its size and offset checked like a region's, inside the file),
   * hand it to the data plane, then unmap the previous one. Takes ownership of `fd`: the
   * mapping keeps the memory, so the fd is closed at once (DPDK and libvhost-user do the same).
   */
  setLogBase(log: LogDescription, fd: number): bigint {
    let mappingId: number;
    try {
      checkLogArea(log);
      mappingId = this.memory.mapArea(fd, log.mmapSize, log.mmapOffset, 'dirty log');
    } finally {
      this.native.close(fd);
    }
    const old = this.dirtyLog;
    this.dirtyLog = { mappingId, size: Number(log.mmapSize) };
    this.dataPlane.setLog(this.dirtyLog);
    if (old) this.native.munmap(old.mappingId);
    this.changed({ what: 'dirty log set', bytes: this.dirtyLog.size, offset: hex(log.mmapOffset) });
    return 0n;
  }

  /** SET_LOG_FD: kept (and closed with the session); the device does not signal it. */
  setLogFd(fd: number): void {
    if (this.logFd >= 0) this.native.close(this.logFd);
    this.logFd = fd;
  }

  /** Session over, data plane closed: unmap the log and close the log fd. */
  private releaseLog(): void {
    if (this.dirtyLog) this.native.munmap(this.dirtyLog.mappingId);
    this.dirtyLog = undefined;
    if (this.logFd >= 0) this.native.close(this.logFd);
    this.logFd = -1;
  }

  // --- vrings ---------------------------------------------------------------------------

  setVringNum(s: VringState): void {
    const v = this.vring(s.index);
    if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) {
      throw new SessionError(ErrorCode.BadVringNum, `vring ${s.index}: size ${s.num} is not a power of 2 in 1..32768`, {
        vring: s.index,
        num: s.num,
      });
    }
    this.refuseWhileStarted(v, 'SET_VRING_NUM');
    v.num = s.num;
  }

  setVringAddr(a: VringAddr): void {
    const v = this.vring(a.index);
    const o = v.addr;
    if (
      v.started &&
      o &&
      o.descUserAddr === a.descUserAddr &&
      o.availUserAddr === a.availUserAddr &&
      o.usedUserAddr === a.usedUserAddr
    ) {
      // vhost-user.rst "Migration": logging starts and stops with SET_VRING_ADDR's
      // VHOST_VRING_F_LOG while the ring runs; the ring itself stays where it is.
      v.addr = { ...a };
      if (this.running.has(v.index)) this.dataPlane.setRingLog(v.index, usedLogAddr(a));
      this.changed({ what: 'vring log', vring: v.index, logUsed: usedLogAddr(a) !== undefined });
      return;
    }
    this.refuseWhileStarted(v, 'SET_VRING_ADDR');
    v.addr = { ...a };
  }

  /** Whether the rings are packed (VIRTIO_F_RING_PACKED acked). */
  packed(): boolean {
    return this.ackedFeatures !== undefined && hasFeature(this.ackedFeatures, VirtioFeature.F_RING_PACKED);
  }

  setVringBase(s: VringState): void {
    const v = this.vring(s.index);
    if (this.packed()) {
      // vhost-user.rst "Vring state description": for a packed ring, bits 0-14 are the next
      // descriptor to read and bit 15 the driver's wrap counter; QEMU also sends the used
      // position and the device's wrap counter in bits 16-31. DPDK's virtio_user sends only
      // the low half: with nothing in flight, used starts where avail does.
      this.refuseWhileStarted(v, 'SET_VRING_BASE');
      v.lastAvailIdx = s.num & 0xffff;
      v.usedIdx = s.num >>> 16 !== 0 ? s.num >>> 16 : v.lastAvailIdx;
      v.givenBase = s.num >>> 0;
      return;
    }
    // Split rings: the next avail index, a u16 (vhost-user.rst "Vring state description").
    if (s.num > 0xffff) {
      throw new SessionError(ErrorCode.BadVringBase, `vring ${s.index}: base ${s.num} exceeds 16 bits`, {
        vring: s.index,
        num: s.num,
      });
    }
    this.refuseWhileStarted(v, 'SET_VRING_BASE');
    v.lastAvailIdx = s.num;
  }

  /**
   * GET_VRING_BASE: "the back-end must stop the ring" and reply with the next avail index.
   * Like libvhost-user and DPDK, the kick and call fds are closed: the front-end sends new
   * ones before it starts the ring again.
   */
  getVringBase(index: number): VringState {
    const v = this.vring(index);
    if (v.started) {
      this.stopVring(v);
      this.changed({ what: 'vring stopped', vring: index, lastAvailIdx: v.lastAvailIdx });
    }
    this.unwatchKick(index);
    this.closeFd(v, 'kickFd');
    this.closeFd(v, 'callFd');
    v.kickPolling = false;
    // The front-end learns the position now: the journal's record no longer applies.
    if (this.packed()) this.options.journal?.markHandedOver(index);
    // Packed: both positions, as QEMU reads them (avail in bits 0-15, used in 16-31).
    return { index, num: this.packed() ? (v.lastAvailIdx | (v.usedIdx << 16)) >>> 0 : v.lastAvailIdx };
  }

  setVringKick(index: number, fd: number | undefined): void {
    const v = this.vring(index);
    if (v.started) {
      this.stopVring(v);
      this.changed({ what: 'vring stopped', vring: index, reason: 'new kick fd' });
    }
    this.unwatchKick(index);
    this.closeFd(v, 'kickFd');
    this.resumeFromJournal(v);
    if (fd === undefined) {
      // "no fd" bit: the ring is polled; there will be no kick to wait for.
      v.kickPolling = true;
      this.startVring(v, 'kick fd absent: polling');
      return;
    }
    v.kickPolling = false;
    v.kickFd = fd;
    if (v.addr && this.buffersWaiting(v)) {
      // Buffers made available that no back-end completed: the driver kicked for them already,
      // and that kick went to a back-end that is gone (DPDK's virtio_user reconnecting after a
      // back-end restart, with its transmitq full, kicks no more). Counted as the ring's kick:
      // it starts now.
      this.startVring(v, 'kick fd set with buffers already waiting');
      return;
    }
    // vhost-user.rst "Ring states": the back-end starts the ring upon receiving a kick, that is
    // on detecting that the kick fd is readable.
    const w = new this.native.Poller(fd, () => {
      this.unwatchKick(index);
      if (!v.started && v.kickFd === fd) this.startVring(v, 'first kick');
    });
    w.start(1);
    this.kickWatchers.set(index, w);
  }

  /**
   * A packed ring the front-end starts at the position it gave a backend that is gone: the
   * ring journal says where that backend got to (ring-journal.ts decideResume), and finishes a
   * flush it was in the middle of. A split ring resumes from used->idx instead (startVring).
   */
  private resumeFromJournal(v: Vring): void {
    const journal = this.options.journal;
    if (!journal || !this.packed() || !v.addr || v.givenBase === undefined || v.index >= journal.vrings) return;
    const rec = journal.read(v.index);
    if (rec.state !== RecordState.Running) return;
    const desc = this.memory.refView().area(v.addr.descUserAddr, 16 * v.num);
    const ring = { givenBase: v.givenBase, descVa: v.addr.descUserAddr, num: v.num };
    const r = decideResume(rec, ring, (slot) =>
      desc && slot < v.num
        ? {
            flags: desc.view.getUint16(desc.offset + 16 * slot + 14, true),
            len: desc.view.getUint32(desc.offset + 16 * slot + 8, true),
          }
        : undefined,
    );
    if (r.kind === 'not-applicable') {
      this.log.info({ vring: v.index, why: r.why }, 'ring journal not used');
      return;
    }
    // The flush the dead backend had not committed: flags in order, the commit slot's last.
    if (r.kind === 'rolled-forward' && desc) {
      for (const w of r.writes) desc.view.setUint16(desc.offset + 16 * w.slot + 14, w.flags, true);
    }
    const what = { vring: v.index, setVringBase: hex(v.givenBase), position: r.position, how: r.kind };
    this.log.warn(
      what,
      'SET_VRING_BASE is the position a backend that is gone was given: resuming from the ring journal',
    );
    this.changed({ what: 'vring resumed from the ring journal', ...what });
    v.lastAvailIdx = r.position;
    v.usedIdx = r.position;
  }

  /** Whether guest memory shows buffers available and not used (avail->idx != used->idx). */
  private buffersWaiting(v: Vring): boolean {
    if (!v.addr) return false;
    if (this.packed()) {
      // §2.8.1: the descriptor at the next position is available when its AVAIL bit equals the
      // wrap counter and its USED bit does not.
      const pos = v.lastAvailIdx & 0x7fff;
      if (pos >= v.num) return false;
      const flags = this.memory.u16At(v.addr.descUserAddr + BigInt(16 * pos + 14));
      const wrap = (v.lastAvailIdx & 0x8000) !== 0;
      return flags !== undefined && ((flags & 0x80) !== 0) === wrap && ((flags & 0x8000) !== 0) !== wrap;
    }
    const avail = this.memory.u16At(v.addr.availUserAddr + 2n);
    const used = this.memory.u16At(v.addr.usedUserAddr + 2n);
    return avail !== undefined && used !== undefined && avail !== used;
  }

  setVringCall(index: number, fd: number | undefined): void {
    const v = this.vring(index);
    const old = v.callFd;
    v.callFd = fd ?? -1;
    // The data plane takes the new fd first (its workers stopped meanwhile), then the old one
    // is closed: a worker never writes to a closed fd number, and every entry it flushed
    // before the switch is in guest memory when the interrupt below goes out.
    if (v.started) this.dataPlane.setCall(index, v.callFd);
    if (old >= 0) this.native.close(old);
    if (fd === undefined) return;
    // An interrupt on every new call fd, as libvhost-user does "in case of I/O hang after
    // reconnecting": a backend that died between publishing used entries and signalling
    // them, or a ring that started at SET_VRING_KICK (buffers waiting) and used entries
    // before this fd came, leaves a driver that was never told; with EVENT_IDX it would not
    // be told again until it moved on by itself. A driver takes an interrupt with nothing new
    // as nothing (its ring shows no new used entry).
    try {
      this.native.eventfdWrite(fd, 1n);
    } catch (err) {
      // Not an eventfd, or full: the front-end's business; the ring signals it as it can.
      this.log.warn({ vring: index, err: (err as Error).message }, 'SET_VRING_CALL: the call fd cannot be signalled');
    }
  }

  setVringErr(index: number, fd: number | undefined): void {
    const v = this.vring(index);
    this.closeFd(v, 'errFd');
    if (fd !== undefined) v.errFd = fd;
  }

  setVringEnable(s: VringState): void {
    const v = this.vring(s.index);
    if (s.num > 1) {
      throw new SessionError(ErrorCode.BadField, `SET_VRING_ENABLE: num ${s.num} is neither 0 nor 1`, {
        vring: s.index,
      });
    }
    const before = this.isEnabled(v);
    v.enabled = s.num === 1;
    const after = this.isEnabled(v);
    if (before !== after) {
      this.changed({ what: after ? 'vring enabled' : 'vring disabled', vring: s.index });
      if (v.started) this.dataPlane.setEnabled(v.index, after);
    }
  }

  // --- net specifics --------------------------------------------------------------------

  sendRarp(u64: bigint): void {
    // The MAC sits in the first 6 bytes of the (little-endian) u64 payload.
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(u64);
    const mac = [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
    this.rarpMac = mac;
    this.changed({ what: 'rarp requested', mac });
    this.dataPlane.sendRarp(mac);
  }

  netSetMtu(mtu: bigint): void {
    // virtio 1.2 §5.1.4: mtu is a u16 and at least 68.
    if (mtu < 68n || mtu > 65535n) {
      throw new SessionError(ErrorCode.BadMtu, `NET_SET_MTU: ${mtu} outside 68..65535`, { mtu: Number(mtu) });
    }
    if (this.mtu !== Number(mtu)) {
      this.mtu = Number(mtu);
      this.changed({ what: 'mtu set', mtu: this.mtu });
      this.dataPlane.setHostMtu(this.mtu);
    }
  }

  setStatus(status: bigint): void {
    if (status > 0xffn) {
      throw new SessionError(ErrorCode.BadField, `SET_STATUS: ${hex(status)} is not a status byte`);
    }
    if (this.status !== Number(status)) {
      this.status = Number(status);
      this.changed({ what: 'status set', status: hex(this.status) });
    }
  }

  getStatus(): bigint {
    return BigInt(this.status);
  }

  // --- lifetime -------------------------------------------------------------------------

  /** Connection gone: stop every ring, close every fd, unmap every region. */
  close(): void {
    for (const v of this.vrings) this.resetVring(v);
    this.dataPlane.close();
    this.releaseLog();
    this.memory.clear();
  }

  private startVring(v: Vring, reason: string): void {
    v.started = true;
    this.changed({ what: 'vring started', vring: v.index, reason, enabled: this.isEnabled(v) });
    if (!v.addr) {
      // Started as the protocol says, but there is nothing to process.
      this.log.error({ vring: v.index }, 'vring started without SET_VRING_ADDR; not processed');
      return;
    }
    this.running.add(v.index);
    // Where the ring resumes. This device never leaves a chain popped but unused when it
    // stops, so at rest the next avail index equals used->idx. A front-end that lost the
    // position says otherwise: DPDK's virtio_user sends SET_VRING_BASE 0 when a restarted
    // backend reconnects, with the ring thousands of entries on. Like DPDK's vhost library,
    // trust used->idx then (chains the driver made available and the device never completed
    // are taken again: a frame may be sent twice, none is lost from the transmitq).
    let lastAvailIdx = v.lastAvailIdx;
    // A packed ring keeps no used index in memory: it resumes where SET_VRING_BASE says.
    const used = this.packed() ? undefined : this.memory.u16At(v.addr.usedUserAddr + 2n);
    if (used !== undefined && used !== lastAvailIdx) {
      this.log.warn(
        { vring: v.index, setVringBase: lastAvailIdx, usedIdx: used },
        'SET_VRING_BASE differs from used->idx in guest memory: resuming from used->idx',
      );
      this.changed({ what: 'vring resumed from used->idx', vring: v.index, setVringBase: lastAvailIdx, usedIdx: used });
      lastAvailIdx = used;
    }
    const journal = this.packed() && v.index < (this.options.journal?.vrings ?? 0) ? this.options.journal : undefined;
    if (journal) {
      const identity = {
        givenBase: v.givenBase ?? v.lastAvailIdx | (v.usedIdx << 16),
        descVa: v.addr.descUserAddr,
        num: v.num,
      };
      journal.markRunning(v.index, identity, v.usedIdx);
    }
    this.dataPlane.start(
      {
        index: v.index,
        num: v.num,
        desc: v.addr.descUserAddr,
        avail: v.addr.availUserAddr,
        used: v.addr.usedUserAddr,
        logGuestAddr: usedLogAddr(v.addr),
        lastAvailIdx,
        // Split: used->idx, read above (the ring resumes from it); packed: as told.
        usedIdx: this.packed() ? v.usedIdx : (used ?? lastAvailIdx),
        kickFd: v.kickPolling ? -1 : v.kickFd,
        callFd: v.callFd,
        enabled: this.isEnabled(v),
        ...(journal ? { journal: journal.ref(v.index) } : {}),
      },
      this.memory,
    );
  }

  /** Stops a started ring; the position of one the data plane ran comes back from it. */
  private stopVring(v: Vring): void {
    if (this.running.delete(v.index)) {
      const at = this.dataPlane.stop(v.index);
      v.lastAvailIdx = at.lastAvailIdx;
      v.usedIdx = at.usedIdx;
    }
    v.started = false;
  }

  private resetVring(v: Vring): void {
    if (v.started) this.stopVring(v);
    this.unwatchKick(v.index);
    this.closeFd(v, 'kickFd');
    this.closeFd(v, 'callFd');
    this.closeFd(v, 'errFd');
    Object.assign(v, newVring(v.index));
  }

  private refuseWhileStarted(v: Vring, what: string): void {
    if (v.started) {
      throw new SessionError(ErrorCode.BadField, `${what} on vring ${v.index} while it is started`, { vring: v.index });
    }
  }

  private unwatchKick(index: number): void {
    this.kickWatchers.get(index)?.close();
    this.kickWatchers.delete(index);
  }

  private closeFd(v: Vring, which: 'kickFd' | 'callFd' | 'errFd'): void {
    if (v[which] >= 0) {
      this.native.close(v[which]);
      v[which] = -1;
    }
  }
}
