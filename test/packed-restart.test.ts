/**
 * Packed rings across backend crashes, without a VM: the backend (bin/vhost-user-net.js,
 * loopback host) is killed with SIGKILL at random moments while a packed driver keeps frames
 * going, started again, and reconnected to as QEMU does after a crash: the same memory and
 * rings, and SET_VRING_BASE as first given (QEMU has no newer position for a packed ring). The
 * ring journal (`--ring-state`, default beside the socket) lets each new backend resume where
 * the dead one stopped: traffic comes back after every kill, every used descriptor the driver
 * reads names a buffer it has in flight, and every frame arrives intact. Without the journal
 * the ring does not come back: the device waits at a position the driver left long ago.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { encodeMemTable, encodeU64, encodeVringState } from '../src/vhost-user/codec.js';
import { Proc } from '../src/util/proc.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { type GuestRam, MockFrontend } from './helpers/mock-frontend.js';
import type { PackedDriver } from './helpers/packed-driver.js';

const FEATURES = featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES, F.F_RING_PACKED);
const HDR = 12;
const NUM = 256;
const RX_BASE = 0x100000;
const TX_BASE = 0x200000;
const BIN = join(import.meta.dirname, '..', 'bin', 'vhost-user-net.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => void | Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The guest: its RAM outlives every connection; the drivers keep their state across them. */
class Guest {
  readonly ram: GuestRam;
  rq!: PackedDriver;
  tq!: PackedDriver;
  kicks = { receiveq: -1, transmitq: -1 };
  private readonly rxFree = Array.from({ length: 128 }, (_, i) => i);
  private readonly txFree = Array.from({ length: 64 }, (_, i) => i);
  private readonly rxOut = new Set<number>();
  private readonly txOut = new Set<number>();
  seq = 0;
  readonly received: number[] = [];
  readonly problems: string[] = [];

  constructor() {
    const fd = native.memfdCreate('packed-restart-ram', 4 << 20);
    const mappingId = native.mmapFd(fd, 4 << 20, 0);
    this.ram = {
      fd,
      size: 4 << 20,
      mappingId,
      bytes: new Uint8Array(native.mappingBuffer(mappingId)),
      region: { guestAddr: 0n, size: BigInt(4 << 20), userAddr: 0x7f0000000000n, mmapOffset: 0n },
    };
  }

  release(): void {
    native.munmap(this.ram.mappingId);
    native.close(this.ram.fd);
  }

  /** QEMU's sequence on (re)connecting: the same memory, rings set up at the base first given. */
  async attach(sock: string): Promise<MockFrontend> {
    const fe = MockFrontend.connect(native, sock);
    await fe.handshake();
    if ((await fe.acked('SET_FEATURES', encodeU64(FEATURES))) !== 0n) throw new Error('SET_FEATURES refused');
    if ((await fe.acked('SET_MEM_TABLE', encodeMemTable([this.ram.region]), [this.ram.fd])) !== 0n)
      throw new Error('SET_MEM_TABLE refused');
    const r = await fe.setupVring(0, this.ram, { num: NUM, base: 0x8000 });
    const t = await fe.setupVring(1, this.ram, { num: NUM, base: 0x8000 });
    for (const index of [0, 1]) await fe.acked('SET_VRING_ENABLE', encodeVringState({ index, num: 1 }));
    this.rq ??= fe.packedDriver(0, this.ram, NUM);
    this.tq ??= fe.packedDriver(1, this.ram, NUM);
    this.kicks = { receiveq: r.kick, transmitq: t.kick };
    return fe;
  }

  /** One round: takes what was used, refills receive buffers, sends frames up to `inFlight`. */
  pump(send: boolean, inFlight = 32): void {
    for (const u of this.rq.takeUsed()) {
      if (!this.rxOut.delete(u.id)) this.problems.push(`receiveq used id ${u.id}: not in flight`);
      const at = RX_BASE + u.id * 2048 + HDR;
      const b = this.ram.bytes;
      const seq = (b[at + 14]! | (b[at + 15]! << 8) | (b[at + 16]! << 16) | (b[at + 17]! << 24)) >>> 0;
      if (u.len !== HDR + 60 || b[at + 12] !== 0x88 || b[at + 13] !== 0xb5 || b[at + 59] !== (seq & 0xff))
        this.problems.push(`receiveq id ${u.id}: frame ${seq} damaged (len ${u.len})`);
      this.received.push(seq);
      this.rxFree.push(u.id);
    }
    for (const u of this.tq.takeUsed()) {
      if (!this.txOut.delete(u.id)) this.problems.push(`transmitq used id ${u.id}: not in flight`);
      else this.txFree.push(u.id);
    }
    let rx = 0;
    while (this.rxFree.length) {
      const id = this.rxFree.shift() as number;
      this.rq.addChain([{ addr: BigInt(RX_BASE + id * 2048), len: 2048, write: true }], id);
      this.rxOut.add(id);
      rx++;
    }
    if (rx) {
      this.rq.publish();
      native.eventfdWrite(this.kicks.receiveq, 1n);
    }
    let tx = 0;
    while (send && this.txOut.size < inFlight && this.txFree.length) {
      const id = this.txFree.shift() as number;
      const at = TX_BASE + id * 256;
      const b = this.ram.bytes;
      b.fill(0, at, at + HDR);
      b.fill(0xff, at + HDR, at + HDR + 6); // broadcast
      b.set([0x02, 0, 0, 0, 0, 1, 0x88, 0xb5], at + HDR + 6);
      const s = this.seq++;
      b.set([s & 0xff, (s >> 8) & 0xff, (s >> 16) & 0xff, (s >>> 24) & 0xff], at + HDR + 14);
      b.fill(s & 0xff, at + HDR + 18, at + HDR + 60);
      this.tq.addChain([{ addr: BigInt(at), len: HDR + 60, write: false }], id);
      this.txOut.add(id);
      tx++;
    }
    if (tx) {
      this.tq.publish();
      native.eventfdWrite(this.kicks.transmitq, 1n);
    }
  }
}

function startBackend(sock: string, args: string[]): Proc {
  return new Proc(process.execPath, [BIN, '--socket-path', sock, '--backend', 'loopback', '--ring', 'packed', ...args]);
}

/** Runs traffic until `until` says stop; pumps every millisecond or so. */
async function traffic(g: Guest, until: () => boolean, limitMs: number): Promise<boolean> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    g.pump(true);
    if (until()) return true;
    await sleep(1);
  }
  return false;
}

/** A backend on a socket of its own, killed and started again at will, and the guest on it. */
class Crashing {
  readonly sock: string;
  readonly g = new Guest();
  backend: Proc;
  fe: MockFrontend | undefined;

  constructor(private readonly args: string[]) {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    this.sock = join(tmp.dir, 'vhost.sock');
    this.backend = startBackend(this.sock, args);
    cleanups.push(() => this.backend.stop('SIGKILL'));
    cleanups.push(() => this.g.release());
    cleanups.push(() => this.fe?.close());
  }

  async attach(): Promise<void> {
    await waitFor(() => existsSync(this.sock), 15_000, 'backend socket');
    this.fe = await this.g.attach(this.sock);
  }

  /** SIGKILL, a new backend on the same socket, and the guest reconnecting as QEMU does. */
  async restart(what: string): Promise<void> {
    await this.backend.stop('SIGKILL');
    this.fe?.close();
    this.backend = startBackend(this.sock, this.args);
    const b = this.backend;
    await waitFor(() => b.output.includes('"msg":"listening"'), 15_000, `${what} listening`);
    this.fe = await this.g.attach(this.sock);
  }
}

describe.each(['native', 'ts'] as const)('packed rings across SIGKILL restarts (%s data path)', (datapath) => {
  it('traffic resumes after each of 8 kills at random moments; every used id was in flight; frames intact', async () => {
    const c = new Crashing(['--datapath', datapath, '--log-level', 'info']);
    const g = c.g;
    await c.attach();
    expect(await traffic(g, () => g.received.length >= 200, 10_000), 'first frames').toBe(true);
    const resumed: string[] = [];
    for (let kill = 1; kill <= 8; kill++) {
      // At a random moment of steady traffic.
      const t = Date.now() + 20 + Math.floor(Math.random() * 300);
      await traffic(g, () => Date.now() >= t, 5_000);
      await c.restart(`backend ${kill + 1}`);
      const backend = c.backend;
      const before = g.received.length;
      const ok = await traffic(g, () => g.received.length >= before + 200, 10_000);
      const ctx = `kill ${kill}: ${g.received.length - before} frames after it\n${backend.output.slice(-3000)}`;
      expect(ok, ctx).toBe(true);
      // How each ring resumed (ring-journal.ts decideResume): committed, pending, rolled-forward.
      const how = [...backend.output.matchAll(/"how":"([a-z-]+)"[^\n]*resuming from the ring journal/g)].map(
        (m) => m[1],
      );
      resumed.push(how.length === 2 ? how.join('+') : `not from the journal (${how.join('+')})`);
    }
    // Drain: nothing more sent; what is in flight comes back until 300 ms pass without a frame.
    const sent = g.seq;
    for (let last = -1, quietSince = Date.now(); Date.now() - quietSince < 300; await sleep(5)) {
      g.pump(false);
      if (g.received.length !== last) [last, quietSince] = [g.received.length, Date.now()];
    }
    expect(g.problems).toEqual([]);
    const seen = new Set(g.received);
    const duplicates = g.received.length - seen.size;
    let missing = 0;
    for (let s = 0; s < sent; s++) if (!seen.has(s)) missing++;
    console.log(
      `${datapath}: ${sent} frames sent, ${seen.size} arrived, ${duplicates} twice, ${missing} never; resumed: ${resumed.join(', ')}`,
    );
    // Both rings resumed through the journal at each restart (a packed ring has no other record).
    expect(resumed.filter((r) => r.startsWith('not'))).toEqual([]);
    // A kill loses or repeats only what the dead backend had in hand: at most a burst each
    // (with the loopback host, frames it had taken from the transmitq and not yet delivered).
    expect(duplicates + missing).toBeLessThanOrEqual(8 * 64);
  }, 180_000);
});

describe('packed rings across a SIGKILL restart without the journal', () => {
  it('--ring-state off: the ring does not come back (the device waits where the front-end says)', async () => {
    const c = new Crashing(['--ring-state', 'off', '--log-level', 'info']);
    const g = c.g;
    await c.attach();
    expect(await traffic(g, () => g.received.length >= 600, 10_000), 'first frames').toBe(true);
    await c.restart('backend 2');
    const before = g.received.length;
    expect(await traffic(g, () => g.received.length >= before + 200, 3_000)).toBe(false);
    expect(g.received.length - before).toBeLessThan(200);
  }, 60_000);
});
