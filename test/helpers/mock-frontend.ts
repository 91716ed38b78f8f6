/**
 * A QEMU stand-in over a real unix socket: it lays out guest memory in a memfd, creates kick
 * and call eventfds, and can script any sequence of vhost-user messages, well formed or not.
 */
import type { NativeBinding, NativePoller } from '../../src/native.js';
import {
  encodeMemTable,
  encodeMessage,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  Flags,
  HEADER_SIZE,
  type MemRegion,
  OWN_REPLY,
  Request,
  type RequestName,
  VRING_NOFD_MASK,
  type VringState,
} from '../../src/vhost-user/codec.js';
import { featureMask, hasFeature, ProtocolFeature, VirtioFeature } from '../../src/features.js';
import { PackedDriver } from './packed-driver.js';
import { type Layout, RingDriver } from './ring-driver.js';

export interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

/** The driver side of one queue pair, with its kick and call eventfds. */
export interface DriverPair {
  receiveq: RingDriver;
  transmitq: RingDriver;
  kicks: { receiveq: number; transmitq: number };
  calls: { receiveq: number; transmitq: number };
}

export interface GuestRam {
  fd: number;
  size: number;
  mappingId: number;
  bytes: Uint8Array;
  region: MemRegion;
}

interface Waiter {
  resolve(r: Reply): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** Requests that answer with a payload of their own (no REPLY_ACK needed). */
const HAS_REPLY = new Set<number>([...OWN_REPLY].map((n) => Request[n]));

export class MockFrontend {
  private readonly poller: NativePoller;
  private inbox = Buffer.alloc(0);
  private readonly replies: Reply[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly owned: number[] = [];
  private readonly mappings = new Set<number>();
  private closedResolve!: () => void;
  /** Resolves when the backend closes the connection. */
  readonly peerClosed: Promise<void>;
  isPeerClosed = false;
  replyAck = false;

  static connect(native: NativeBinding, path: string): MockFrontend {
    return new MockFrontend(native, native.unixConnect(path));
  }

  constructor(
    readonly native: NativeBinding,
    readonly fd: number,
  ) {
    this.peerClosed = new Promise((r) => (this.closedResolve = r));
    this.poller = new native.Poller(fd, () => this.onReadable());
    this.poller.start(1);
  }

  /** Sends raw bytes with optional fds (fds stay ours). */
  sendRaw(bytes: Buffer, fds: number[] = []): void {
    this.native.sendMsg(this.fd, bytes, fds);
  }

  send(
    request: number,
    payload: Buffer = Buffer.alloc(0),
    opts: { fds?: number[]; flags?: number; needReply?: boolean } = {},
  ): void {
    let flags = opts.flags ?? Flags.VERSION;
    if (opts.needReply) flags |= Flags.NEED_REPLY;
    this.sendRaw(encodeMessage(request, flags, payload), opts.fds ?? []);
  }

  /**
   * Sends a request and waits for what it answers: its own reply, or the REPLY_ACK u64 when
   * `replyAck` is on. Returns undefined for requests that answer nothing.
   */
  async request(
    name: RequestName,
    payload?: Buffer,
    opts: { fds?: number[]; timeoutMs?: number } = {},
  ): Promise<Reply | undefined> {
    const request = Request[name];
    const ack = this.replyAck && !HAS_REPLY.has(request);
    this.send(request, payload, { fds: opts.fds, needReply: ack });
    if (!HAS_REPLY.has(request) && !ack) return undefined;
    const r = await this.nextReply(opts.timeoutMs);
    if (r.request !== request) throw new Error(`reply to ${r.request}, expected ${request}`);
    if ((r.flags & Flags.REPLY) === 0) throw new Error('reply without the reply flag');
    return r;
  }

  async u64(name: RequestName, payload?: Buffer, fds?: number[]): Promise<bigint> {
    const r = await this.request(name, payload, { fds });
    if (!r) throw new Error(`${name} gave no reply`);
    if (r.payload.length !== 8) throw new Error(`${name}: reply of ${r.payload.length} bytes`);
    return r.payload.readBigUInt64LE(0);
  }

  /** Sends with REPLY_ACK on and returns the ack value (0 = success). */
  async acked(name: RequestName, payload?: Buffer, fds?: number[]): Promise<bigint> {
    if (!this.replyAck) throw new Error('REPLY_ACK not negotiated');
    return this.u64(name, payload, fds);
  }

  nextReply(timeoutMs = 2000): Promise<Reply> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.isPeerClosed) return Promise.reject(new Error('backend closed the connection'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.findIndex((w) => w.timer === timer);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push({ resolve, reject, timer });
    });
  }

  /** Resolves when the backend closed the connection, rejects after `timeoutMs`. */
  async expectClosed(timeoutMs = 2000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`backend did not close within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.peerClosed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  // --- resources the front-end owns -------------------------------------------------------

  eventfd(): number {
    const fd = this.native.eventfdCreate(0);
    this.owned.push(fd);
    return fd;
  }

  /** Guest RAM in a memfd, at guest physical `gpa` and front-end address `userAddr`. */
  guestRam(size: number, gpa = 0n, userAddr = 0x7f0000000000n, fileSize = size, mmapOffset = 0n): GuestRam {
    const fd = this.native.memfdCreate('mock-guest-ram', fileSize);
    this.owned.push(fd);
    const mappingId = this.native.mmapFd(fd, size, Number(mmapOffset));
    this.mappings.add(mappingId);
    const bytes = new Uint8Array(this.native.mappingBuffer(mappingId));
    return { fd, size, mappingId, bytes, region: { guestAddr: gpa, size: BigInt(size), userAddr, mmapOffset } };
  }

  // --- QEMU's sequence ---------------------------------------------------------------------

  /**
   * What QEMU does before the guest driver starts: features, protocol features (REPLY_ACK on
   * when offered), queue number, owner. Returns the offered features.
   */
  async handshake(
    opts: { replyAck?: boolean } = {},
  ): Promise<{ features: bigint; protocolFeatures: bigint; queues: bigint }> {
    const features = await this.u64('GET_FEATURES');
    const protocolFeatures = await this.u64('GET_PROTOCOL_FEATURES');
    let want = protocolFeatures;
    if (opts.replyAck === false) want &= ~featureMask(ProtocolFeature.REPLY_ACK);
    await this.request('SET_PROTOCOL_FEATURES', encodeU64(want));
    this.replyAck = (want & featureMask(ProtocolFeature.REPLY_ACK)) !== 0n;
    const queues = await this.u64('GET_QUEUE_NUM');
    await this.request('SET_OWNER');
    return { features, protocolFeatures, queues };
  }

  /** Sets up vring `index` over `ram` (QEMU's order: NUM, BASE, ADDR, KICK, CALL). */
  async setupVring(
    index: number,
    ram: GuestRam,
    opts: { num?: number; base?: number } = {},
  ): Promise<{ kick: number; call: number }> {
    const num = opts.num ?? 256;
    const descOff = BigInt(index) * 0x10000n;
    await this.request('SET_VRING_NUM', encodeVringState({ index, num }));
    await this.request('SET_VRING_BASE', encodeVringState({ index, num: opts.base ?? 0 }));
    await this.request(
      'SET_VRING_ADDR',
      encodeVringAddr({
        index,
        flags: 0,
        descUserAddr: ram.region.userAddr + descOff,
        availUserAddr: ram.region.userAddr + descOff + BigInt(num * 16),
        usedUserAddr: ram.region.userAddr + descOff + 0x8000n,
        logGuestAddr: 0n,
      }),
    );
    const kick = this.eventfd();
    const call = this.eventfd();
    await this.request('SET_VRING_KICK', encodeU64(BigInt(index)), { fds: [kick] });
    await this.request('SET_VRING_CALL', encodeU64(BigInt(index)), { fds: [call] });
    return { kick, call };
  }

  /**
   * After `handshake`: acks `features`, shares guest RAM, sets up and enables both vrings of
   * every queue pair. A step the backend refuses (non-zero REPLY_ACK) throws.
   */
  async bringUp(
    features: bigint,
    queuePairs: number,
    ramBytes = 4 << 20,
  ): Promise<{ ram: GuestRam; pairs: DriverPair[] }> {
    const ok = async (what: RequestName, v: Promise<bigint>) => {
      const ack = await v;
      if (ack !== 0n) throw new Error(`${what} refused (ack ${ack})`);
    };
    await ok('SET_FEATURES', this.acked('SET_FEATURES', encodeU64(features)));
    const ram = this.guestRam(ramBytes);
    await ok('SET_MEM_TABLE', this.acked('SET_MEM_TABLE', encodeMemTable([ram.region]), [ram.fd]));
    const pairs: DriverPair[] = [];
    // A packed ring starts at position 0 with both wrap counters 1 (§2.8.1), as QEMU sends it.
    const base = hasFeature(features, VirtioFeature.F_RING_PACKED) ? 0x8000 : 0;
    for (let p = 0; p < queuePairs; p++) {
      const r = await this.setupVring(2 * p, ram, { base });
      const t = await this.setupVring(2 * p + 1, ram, { base });
      for (const index of [2 * p, 2 * p + 1]) {
        await ok('SET_VRING_ENABLE', this.acked('SET_VRING_ENABLE', encodeVringState({ index, num: 1 })));
      }
      pairs.push({
        receiveq: this.driver(2 * p, ram),
        transmitq: this.driver(2 * p + 1, ram),
        kicks: { receiveq: r.kick, transmitq: t.kick },
        calls: { receiveq: r.call, transmitq: t.call },
      });
    }
    return { ram, pairs };
  }

  /** The driver side of vring `index` as laid out by setupVring (for writing chains). */
  driver(index: number, ram: GuestRam, num = 256): RingDriver {
    const descOff = index * 0x10000;
    return new RingDriver(
      [ram.bytes],
      MockFrontend.layout(index, ram, num),
      ram.region.guestAddr + BigInt(descOff + 0xc000),
      descOff + 0xc000,
    );
  }

  /**
   * The driver side of vring `index` as a packed ring (VIRTIO_F_RING_PACKED acked): setupVring's
   * three areas are its descriptor ring, driver area and device area.
   */
  packedDriver(index: number, ram: GuestRam, num = 256, start = 0x8000): PackedDriver {
    const descOff = index * 0x10000;
    return new PackedDriver(
      [ram.bytes],
      MockFrontend.layout(index, ram, num),
      ram.region.guestAddr + BigInt(descOff + 0xc000),
      descOff + 0xc000,
      start,
    );
  }

  private static layout(index: number, ram: GuestRam, num: number): Layout {
    const descOff = index * 0x10000;
    return {
      num,
      descOff,
      availOff: descOff + num * 16,
      usedOff: descOff + 0x8000,
      gpaBase: ram.region.guestAddr,
      vaBase: ram.region.userAddr,
    };
  }

  static vringFileNoFd(index: number): Buffer {
    return encodeU64(BigInt(index) | VRING_NOFD_MASK);
  }

  static state(s: VringState): Buffer {
    return encodeVringState(s);
  }

  static memTable(regions: MemRegion[]): Buffer {
    return encodeMemTable(regions);
  }

  static region(r: MemRegion): Buffer {
    return encodeSingleRegion(r);
  }

  /** Closes the socket and everything the mock created. */
  close(): void {
    this.poller.close();
    try {
      this.native.close(this.fd);
    } catch {
      /* closed already */
    }
    for (const fd of this.owned.splice(0)) this.native.close(fd);
    for (const id of this.mappings) this.native.munmap(id);
    this.mappings.clear();
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error('mock closed'));
    }
  }

  /** Unmaps guest RAM made by `guestRam`. */
  unmap(ram: GuestRam): void {
    if (this.mappings.delete(ram.mappingId)) this.native.munmap(ram.mappingId);
  }

  private onReadable(): void {
    const chunk = Buffer.alloc(4096);
    for (;;) {
      let r;
      try {
        r = this.native.recvMsg(this.fd, chunk, 0, chunk.length, 8);
      } catch {
        r = { bytes: 0, fds: [] as number[] };
      }
      for (const fd of r.fds) this.native.close(fd);
      if (r.bytes < 0) break;
      if (r.bytes === 0) {
        this.isPeerClosed = true;
        this.poller.stop();
        this.closedResolve();
        for (const w of this.waiters.splice(0)) {
          clearTimeout(w.timer);
          w.reject(new Error('backend closed the connection'));
        }
        return;
      }
      this.inbox = Buffer.concat([this.inbox, chunk.subarray(0, r.bytes)]);
    }
    while (this.inbox.length >= HEADER_SIZE) {
      const size = this.inbox.readUInt32LE(8);
      if (this.inbox.length < HEADER_SIZE + size) break;
      const reply: Reply = {
        request: this.inbox.readUInt32LE(0),
        flags: this.inbox.readUInt32LE(4),
        payload: Buffer.from(this.inbox.subarray(HEADER_SIZE, HEADER_SIZE + size)),
      };
      this.inbox = this.inbox.subarray(HEADER_SIZE + size);
      const w = this.waiters.shift();
      if (w) {
        clearTimeout(w.timer);
        w.resolve(reply);
      } else this.replies.push(reply);
    }
  }
}

export const VERSION_1 = featureMask(VirtioFeature.F_VERSION_1);
export const PROTOCOL_FEATURES = featureMask(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);

/**
 * The guest sends frames: each as [virtio-net header][frame] at `base + i * 0x1000`, offered
 * on the pair's transmitq (header and frame in one descriptor, or two with `split`); then one
 * publish and one kick. Headers default to zeros (12 bytes).
 */
export function transmit(
  native: NativeBinding,
  ram: GuestRam,
  p: DriverPair,
  frames: Buffer[],
  o: { base?: number; headers?: Buffer[]; split?: boolean; kick?: boolean } = {},
): void {
  frames.forEach((f, i) => {
    const at = (o.base ?? 0x200000) + i * 0x1000;
    const h = o.headers?.[i] ?? Buffer.alloc(12);
    ram.bytes.set(h, at);
    ram.bytes.set(f, at + h.length);
    p.transmitq.offer(
      p.transmitq.addChain(
        o.split
          ? [
              { addr: BigInt(at), len: h.length, write: false },
              { addr: BigInt(at + h.length), len: f.length, write: false },
            ]
          : [{ addr: BigInt(at), len: h.length + f.length, write: false }],
      ),
    );
  });
  p.transmitq.publish();
  if (o.kick ?? true) native.eventfdWrite(p.kicks.transmitq, 1n);
}
