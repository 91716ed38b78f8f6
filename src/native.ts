/**
 * The whole native surface, typed, in one place. Everything native code can do is declared
 * here; every native error passes through `call()` and becomes a coded HostIoError.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, HostIoError } from './errors.js';
import type { RingState } from './virtio/ring-types.js';

export interface RecvResult {
  /** >0: bytes read; 0: the peer closed; -1: nothing to read now. */
  bytes: number;
  /** fds received with these bytes, now owned by the caller. */
  fds: number[];
  /** MSG_CTRUNC: the kernel dropped fds that did not fit. */
  ctrunc: boolean;
  /** fds beyond the caller's maximum, already closed. */
  extraFds: number;
}

export interface NativePoller {
  /** 1 = readable, 2 = writable. */
  start(events: number): void;
  stop(): void;
  close(): void;
}

export interface NativeBinding {
  abiVersion: number;
  /** The sanitizers this build of the addon runs under ("" for the normal build). */
  sanitizers: string;
  unixListen(path: string, mode: number, backlog: number): number;
  /** An inherited unix stream socket (--fd), owned from now on; `listening` from SO_ACCEPTCONN. */
  adoptUnixFd(fd: number): { fd: number; listening: boolean };
  unixAccept(listenFd: number): number;
  unixConnect(path: string): number;
  socketPair(): [number, number];
  /** One datagram to a unix datagram socket ('@name': abstract), as sd_notify sends. */
  datagramSend(path: string, buf: Buffer): void;
  /** A non-blocking unix datagram socket bound to path (read with fdRead). */
  datagramBind(path: string): number;
  recvMsg(fd: number, buf: Buffer, offset: number, length: number, maxFds: number): RecvResult;
  sendMsg(fd: number, buf: Buffer, fds: number[]): number;
  close(fd: number): void;
  ownedFds(): number;
  /** What this machine charges (native/machine_costs.cc; benchmarks record it): ns each. */
  machineCosts(tapFd: number): { syscallNs: number; eventfdWakeNs: number; tapWriteNs: number };
  /**
   * Test only: native/write_chooser.h fed bursts [frames, plain ns per frame, io_uring ns per
   * frame, now ms]; returns the way each burst went (0 plain, 1 io_uring). fixed: -1 choose.
   */
  writeChooserRun(fixed: number, bursts: [number, number, number, number][]): number[];
  memfdCreate(name: string, size: number, opts?: { sealable?: boolean }): number;
  /** F_GET_SEALS of `fd` (F_SEAL_SEAL 1, SHRINK 2, GROW 4, WRITE 8), or -1 when it cannot carry seals. */
  fileSeals(fd: number): number;
  /** F_ADD_SEALS (tests seal memfds as QEMU does). */
  addSeals(fd: number, seals: number): void;
  mmapFd(fd: number, size: number, offset: number): number;
  munmap(id: number): void;
  /** An ArrayBuffer over the mapping (or a window of it: JS views stop at 4 GiB); detached on munmap. */
  mappingBuffer(id: number, offset?: number, length?: number): ArrayBuffer;
  mappingCount(): number;
  /** The little-endian u16 at byte `offset` of a mapping (a ring index), read once. */
  mappingU16(id: number, offset: number): number;
  /** ftruncate (tests shrink a memfd under running rings, as a hostile front-end would). */
  truncateFile(fd: number, size: number): void;
  /** SIGBUS faults on guest memory contained so far, process-wide (native/memory_fault.h). */
  memoryFaults(): number;
  /** Charges this thread's guest-memory faults to `vring` (-1: none); returns the previous one. */
  memoryFaultScope(vring: number): number;
  /** Whether `vring` faulted on this thread since the last call (clears it). */
  takeMemoryFault(vring: number): boolean;
  eventfdCreate(initval: number): number;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value: bigint): void;
  tapOpen(
    name: string,
    opts: { vnetHdr: boolean; multiQueue: boolean; persist?: boolean },
  ): { fd: number; name: string };
  /** A TAP-API character device by path (a macvtap's /dev/tapN); each call adds one queue. */
  tapOpenPath(path: string, opts: { vnetHdr: boolean; multiQueue: boolean }): number;
  /**
   * qdiscBypass: PACKET_QDISC_BYPASS (frames sent skip the interface's qdisc); rxRing: a
   * TPACKET_V3 receive ring, which the native data path reads.
   */
  afPacketOpen(
    ifname: string,
    opts?: { fanoutGroup?: number; fanoutMode?: number; qdiscBypass?: boolean; rxRing?: boolean },
  ): number;
  ifaceSetup(name: string, opts: { mac?: Buffer; up: boolean; mtu?: number }): void;
  fdRead(fd: number, buf: Buffer): number;
  fdWrite(fd: number, buf: Buffer): number;
  tapSetVnet(fd: number, hdrLen: number, offloads: number): void;
  Poller: new (fd: number, callback: (status: number, events: number) => void) => NativePoller;
  /** The data plane of one device (see native/net_device.h); `onEvent` hears its threads. */
  NetDevice: new (
    queuePairs: number,
    counters: BigUint64Array,
    onEvent: (event: NativeDeviceEvent) => void,
  ) => NativeNetDevice;
  /** One C++ split ring driven call by call: differential tests only. */
  RingModel: new (regions: NativeRegion[], cfg: RingModelConfig) => NativeRingModel;
  ringErrorNames: string[];
  /** The C++ RSS path (native/rss.h): tests hold it to src/net/rss.ts. */
  rssHash(key: Buffer, frame: Buffer, table: number[]): { hash: number; type: number; pair: number };
  toeplitz(key: Buffer, input: Buffer): number;
  /**
   * Interrupt coalescing's decisions (native/coalesce.h) on a clock the test drives: steps
   * [op (0 flush, 1 timer, 2 stop), atUs, frames, asked]; tests only.
   */
  coalesceRun(
    cfg: { mode: number; usecs: number; frames: number },
    steps: [number, number, number?, boolean?][],
  ): string[];
  /** The virtio-net device rules of native/net_rules.h: tests hold them to src/net/rules.ts. */
  netRules: NativeNetRules;
  /** The CPUs this process may run on (sched_getaffinity): `--cpus` is checked against it. */
  allowedCpus(): number[];
  /** Counter slot names in slot order (native/device_config.h): src/net/counters.ts must match. */
  counterNames: string[];
  countersPerVring: number;
}

/** What a data-plane thread reports (handed to the JS thread, never called on the worker). */
export type NativeDeviceEvent =
  | { kind: 'vringBroken'; vring: number; error: number; name: string }
  | { kind: 'pinFailed'; thread: number; cpu: number; errno: string };

export interface NativeNetRules {
  headerLen(features: bigint): number;
  numBuffersOffset(hdrLen: number): number;
  receiveRule(features: bigint, flags: number, gsoType: number): number;
  tapOffloads(features: bigint): number;
  receiveChainRule(features: bigint, hdrLen: number, chainLen: number, frameLen: number, nth: number): number;
  recordsFlow(flowAffinity: boolean, transmitqEnabled: boolean): boolean;
  /** native/faults.h Draw: the u64 a fault rule's probability is decided by. */
  faultDraw(seed: number, rule: number, vring: number, event: bigint): bigint;
}

export interface NativeRegion {
  mappingId: number;
  gpa: bigint;
  size: bigint;
  va: bigint;
}

export interface NativeQueueConfig {
  num: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
  /** Used ring logging at this guest address (VHOST_VRING_F_LOG), or -1n: none. */
  logGuestAddr: bigint;
  lastAvailIdx: number;
  usedIdx: number;
  kickFd: number;
  callFd: number;
  enabled: boolean;
  /** Packed rings with --ring-state: the ring's record (native/ring_journal.h). */
  journal?: { mappingId: number; offset: number };
}

/** Host kinds as numbers, as native/host_port.h HostKind. */
/** macvtap is a TAP to the data path: its /dev/tapN speaks the TAP API. */
export const HostKindCode = { null: 0, loopback: 1, tap: 2, macvtap: 2, 'af-packet': 3 } as const;
/** setHost flags: a TAP port submits each transmit burst's writes to io_uring at once. */
export const HOST_FLAG_TAP_IO_URING = 1;
/** With HOST_FLAG_TAP_IO_URING: io_uring only while it costs less per frame (native/write_chooser.h). */
export const HOST_FLAG_TAP_CHOOSE = 2;

export interface NativeNetDevice {
  setMemory(regions: NativeRegion[]): void;
  setFeatures(features: bigint): void;
  /** The dirty log area (a mapping id), or -1: none. Threads restart on it. */
  setLog(mappingId: number): void;
  /** Used ring logging of vring `index` at this guest address, or -1n: none. */
  setRingLog(index: number, logGuestAddr: bigint): void;
  /** flags: HOST_FLAG_*; sourceLen: null:source=LEN. */
  setHost(kind: number, fds: number[], sourceLen: number, flags: number): void;
  /** policy 0 none, 1 toeplitz, 2 flow-affinity; a 40-byte key; an indirection table. */
  setSteering(policy: number, key: Buffer, table: number[]): void;
  /** Pin thread t to cpus[t % length]; [] unpins. A CPU not in this process's set: EINVAL. */
  setCpus(cpus: number[]): void;
  /** Pair p runs on thread threadOf[p] (default: one thread per pair). */
  setThreads(threadOf: number[]): void;
  /** Busy-poll this many microseconds after the last frame before sleeping (0: never). */
  setPoll(us: number): void;
  /** Interrupt coalescing (native/coalesce.h): mode 0 off, 1 static, 2 adaptive. */
  setCoalesce(mode: number, usecs: number, frames: number): void;
  /**
   * Observation rings, one per vring (capture: frames cut to snapLen; trace: ring steps);
   * both false turns them off. Records are decoded by src/trace/observe.ts.
   */
  setObserve(o: { capture: boolean; trace: boolean; faults?: boolean; snapLen?: number; bytes?: number }): void;
  /** A compiled fault plan (src/faults/plan.ts, native/faults.h); [] clears it. */
  setFaults(seed: number, rules: NativeFaultRule[]): void;
  /** Moves waiting records into `buf` ([u32 len][record]...); returns the bytes written. */
  drainObserve(buf: Buffer): number;
  /** Records dropped per vring because the drain fell behind. */
  observeLost(): number[];
  startQueue(index: number, cfg: NativeQueueConfig): void;
  stopQueue(index: number): { lastAvailIdx: number; usedIdx: number; broken: boolean; error: number };
  /** Every vring's position (running rings as their thread last published it). */
  positions(): { lastAvailIdx: number; usedIdx: number }[];
  setEnabled(index: number, enabled: boolean): void;
  setCall(index: number, fd: number): void;
  pause(): void;
  resume(): void;
  close(): void;
}

/** One row of a compiled fault plan as native/faults.h FaultRule takes it. */
export interface NativeFaultRule {
  rule: number;
  vring: number;
  action: number;
  every: number;
  after: number;
  count: number;
  always: boolean;
  threshold: bigint;
  /** u64 two's complement: -1 (none) as 2^64 - 1. */
  atNs: bigint;
  untilNs: bigint;
  mode: number;
  field: number;
  value: bigint;
}

export interface RingModelConfig {
  num: number;
  /** The packed layout (desc, avail, used: descriptor ring, driver area, device area). */
  packed?: boolean;
  /** VIRTIO_F_IN_ORDER: one used element per flushed batch. */
  inOrderBatch?: boolean;
  desc: bigint;
  avail: bigint;
  used: bigint;
  eventIdx: boolean;
  indirect: boolean;
  notifyOnEmpty: boolean;
  lastAvailIdx: number;
  usedIdx: number;
  /** Record ring trace steps (drainTrace). */
  trace?: boolean;
  /** The dirty log (a mapping), with used ring logging at `logGuestAddr` when given. */
  log?: { mappingId: number; logGuestAddr?: bigint };
}

export interface NativeRingModel {
  /** The ring trace records written since the last call ([u32 len][record]...). */
  drainTrace(): Buffer;
  popBurst(max: number): {
    head: number;
    slots: number;
    out: [bigint, number][];
    in: [bigint, number][];
    outLen: number;
    inLen: number;
  }[];
  /** `slots`: the packed ring's descriptor count of the chain (split ignores it). */
  fill(head: number, len: number, idx: number, slots?: number): void;
  flush(count: number): void;
  needNotify(): boolean;
  setNotification(enable: boolean): void;
  rewind(count: number): void;
  /** Moves the marks the ring still caches into the log (what a stop does). */
  syncLog(): void;
  state(): RingState;
}

const here = dirname(fileURLToPath(import.meta.url));
/** Package root: this file is src/native.ts or dist/native.js, one level below it. */
export const packageRoot = join(here, '..');

let binding: NativeBinding | undefined;

/** The addon file this process loads. VUN_NATIVE_ADDON: another build (npm run test:asan loads the sanitized one). */
export function nativeAddonPath(): string {
  return process.env.VUN_NATIVE_ADDON ?? join(packageRoot, 'build', 'Release', 'vhost_user_net.node');
}

/** Loads the addon once per environment (main thread or worker). */
export function loadNative(): NativeBinding {
  if (!binding) {
    const require = createRequire(import.meta.url);
    const path = nativeAddonPath();
    try {
      binding = require(path) as NativeBinding;
    } catch (err) {
      throw new HostIoError(
        ErrorCode.HostIo,
        `native addon not built or not loadable at ${path}: run 'npm run build:native' (${(err as Error).message})`,
        'ENOENT',
        'dlopen',
      );
    }
  }
  return binding;
}

interface ErrnoLike {
  code?: string;
  syscall?: string;
  message?: string;
}

/** Runs a native call; an errno error becomes a HostIoError with the errno as `errno`. */
export function call<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = err as ErrnoLike;
    if (e && typeof e.code === 'string' && e.code.startsWith('E') && e.syscall) {
      throw new HostIoError(ErrorCode.HostIo, `${what}: ${e.message ?? e.code}`, e.code, e.syscall);
    }
    throw err;
  }
}
