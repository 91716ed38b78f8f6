/**
 * The AF_PACKET and TAP host ports without a VM: the backend (bin/vhost-user-net.js) serves
 * af-packet:vpa or tap:vun0 inside a network namespace this test creates, the mock front-end
 * plays the guest, and a Python raw socket on the veth peer vpb (or on the TAP itself) plays the
 * wire. AF_PACKET frames go both ways in batches (sendmmsg, small frames copied and large ones
 * from the guest's buffers; recvmmsg into the port's own); every byte must arrive as it was
 * sent, whatever the chain layout, with the 10-byte header AF_PACKET speaks turned into the
 * guest's 12-byte one and back. A TAP frame is copied whole and written once.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { Netns, startBackend, waitForLink } from '../src/guest/guest.js';
import type { Proc } from '../src/util/proc.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend, transmit } from './helpers/mock-frontend.js';

const COUNT = 40;

/** A distinct broadcast frame (EtherType 0x88b5, local experimental) of `len` bytes. */
function frame(seq: number, len: number): Buffer {
  const f = Buffer.alloc(len);
  f.fill(0xff, 0, 6);
  Buffer.from([0x02, 0, 0, 0, 0, 0x42]).copy(f, 6);
  f.writeUInt16BE(0x88b5, 12);
  f.writeUInt16BE(seq, 14);
  for (let i = 16; i < len; i++) f[i] = (seq * 7 + i) & 0xff;
  return f;
}

// The wire: sends frames given as hex lines on stdin (send-vnet: each after a virtio-net header),
// or prints every 0x88b5 frame it sees.
const WIRE = `
import socket, sys, select, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((sys.argv[1], 0))
if sys.argv[2].startswith('send'):
    if sys.argv[2] == 'send-vnet':  # each line starts with a 10-byte virtio-net header
        s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
    for line in sys.stdin:
        s.send(bytes.fromhex(line.strip()))
else:
    s.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE: a burst must not overflow it
    print('ready', flush=True)
    n, end = int(sys.argv[3]), time.time() + 10
    while n > 0 and time.time() < end:
        if select.select([s], [], [], 0.5)[0]:
            print(s.recv(65536).hex(), flush=True)
            n -= 1
`;

function wire(ns: Netns, args: string[], input?: string): Promise<string> & { ready: Promise<void> } {
  let bound: () => void = () => {};
  const ready = new Promise<void>((r) => (bound = r));
  const done = new Promise<string>((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', WIRE, ...args]);
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('ready')) bound();
    });
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`wire ${args.join(' ')}: ${out}`))));
    if (input !== undefined) p.stdin.end(input);
  });
  return Object.assign(done, { ready });
}

describe('host ports (VM-free, in a namespace)', () => {
  let ns: Netns | undefined;
  let backend: Proc | undefined;
  let fe: MockFrontend | undefined;
  afterEach(async () => {
    fe?.close();
    await backend?.stop();
    ns?.delete();
    ns = backend = fe = undefined;
  });

  /** The backend on af-packet:vpa (a veth whose peer vpb is the wire) or tap:vun0 (its own wire). */
  async function device(extra = 0n, port: 'af-packet' | 'tap' = 'af-packet', options = '', args: string[] = []) {
    ns = new Netns();
    ns.sh('sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1');
    if (port === 'af-packet')
      ns.sh('ip link add vpa mtu 9000 type veth peer name vpb mtu 9000 && ip link set vpa up && ip link set vpb up');
    const tmp = tempDir();
    const sock = join(tmp.dir, 'vhost.sock');
    const spec = port === 'af-packet' ? `af-packet:vpa${options}` : `tap:vun0${options}`;
    backend = startBackend(ns, sock, ['--backend', spec, '--log-level', 'warn', ...args]);
    await waitFor(() => existsSync(sock), 15_000, 'the backend listens');
    if (port === 'tap') {
      await waitForLink(ns, 'vun0');
      ns.sh('ip link set vun0 mtu 9000 up');
    }
    fe = MockFrontend.connect(native, sock);
    await fe.handshake();
    const { ram, pairs } = await fe.bringUp(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES) | extra, 1);
    return { ram, p: pairs[0]!, sock };
  }

  // Each guest frame must leave once, exactly, whatever its chain layout: the header alone;
  // split inside num_buffers; num_buffers alone; many small pieces; header and frame in one
  // descriptor. Every fourth frame is larger than the ports' batch slots (2 KiB): AF_PACKET
  // sends it as iovecs into the guest's buffers, TAP writes it at once after the writes queued
  // for io_uring. Held by a fault plan's delay, a frame is the device's copy and leaves by the
  // port's SendFrame instead.
  // The TS data plane (--datapath ts) has host ports of its own (src/net/host-ports.ts): its
  // AF_PACKET port drops num_buffers on the way out in TS.
  it.each([
    { port: 'af-packet', held: false, options: '', datapath: 'native' },
    { port: 'tap', held: false, options: '', datapath: 'native' },
    { port: 'tap', held: false, options: ',io-uring=on', datapath: 'native' },
    { port: 'tap', held: false, options: ',io-uring=off', datapath: 'native' },
    { port: 'af-packet', held: true, options: '', datapath: 'native' },
    { port: 'tap', held: true, options: '', datapath: 'native' },
    { port: 'af-packet', held: false, options: '', datapath: 'ts' },
    { port: 'af-packet', held: true, options: '', datapath: 'ts' },
  ] as const)(
    '$port $options ($datapath data path, held by a delay: $held): sends each guest frame once, byte for byte, however its chain splits the header',
    async ({ port, held, options, datapath }) => {
      const args: string[] = ['--datapath', datapath];
      if (held) {
        const dir = tempDir();
        const plan = join(dir.dir, 'plan.json');
        writeFileSync(
          plan,
          JSON.stringify({ seed: 1, rules: [{ name: 'hold', on: 'transmitq0', do: 'delay', value: 1 }] }),
        );
        args.push('--faults', plan);
      }
      const { ram, p } = await device(0n, port, options, args);
      const seen = wire(ns!, [port === 'tap' ? 'vun0' : 'vpb', 'recv', String(COUNT)]);
      await Promise.race([seen.ready, seen]); // the receiver is bound (or gone: the asserts say)
      const sent: Buffer[] = [];
      const layouts = [[12], [11], [10, 2], [4, 4, 4], [0]];
      for (let i = 0; i < COUNT; i++) {
        const f = frame(i, i % 4 === 3 ? 2100 + ((i * 797) % 6000) : 60 + ((i * 37) % 1400));
        sent.push(f);
        const at = 0x100000 + i * 0x2000;
        const bytes = Buffer.concat([Buffer.alloc(12), f]);
        bytes.writeUInt16LE(0xbeef, 10); // num_buffers: not part of what leaves
        ram.bytes.set(bytes, at);
        const cuts = layouts[i % layouts.length]!;
        const descs = [];
        let off = 0;
        for (const c of cuts) {
          if (c === 0) break;
          descs.push({ addr: BigInt(at + off), len: c, write: false });
          off += c;
        }
        descs.push({ addr: BigInt(at + off), len: bytes.length - off, write: false });
        p.transmitq.offer(p.transmitq.addChain(descs));
        if (i % 8 === 7) {
          p.transmitq.publish();
          native.eventfdWrite(p.kicks.transmitq, 1n);
        }
      }
      p.transmitq.publish();
      native.eventfdWrite(p.kicks.transmitq, 1n);
      const lines = (await seen).split('\n').filter((l) => /^[0-9a-f]+$/.test(l));
      expect(lines.length).toBe(COUNT);
      // The virtio-net header is not on the wire; the frame is, exactly.
      expect(lines).toEqual(sent.map((f) => f.toString('hex')));
      await waitFor(() => p.transmitq.usedIdx() === COUNT, 2000, 'every chain completed');
    },
  );

  // TAP writes in io_uring batches: a transmit burst's frames leave with one submission, so the
  // backend makes far fewer write(2) calls than it sends frames (/proc/PID/io syscw counts
  // write calls; io_uring's writes are not among them). A duplicate rule sends each frame twice,
  // 128 writes for a burst of 64 chains: more than a batch holds, so a full batch is submitted
  // in the middle of the burst. With io-uring=off each frame is a write of its own.
  it.each([
    { options: ',io-uring=on', batched: true },
    { options: ',io-uring=off', batched: false },
  ])(
    'tap $options: 128 chains sent twice each (bursts of 64) arrive whole and in order',
    async ({ options, batched }) => {
      const dir = tempDir();
      const plan = join(dir.dir, 'plan.json');
      writeFileSync(plan, JSON.stringify({ seed: 1, rules: [{ name: 'twice', on: 'transmitq0', do: 'duplicate' }] }));
      const { ram, p } = await device(0n, 'tap', options, ['--faults', plan]);
      const N = 128;
      const seen = wire(ns!, ['vun0', 'recv', String(2 * N)]);
      await Promise.race([seen.ready, seen]); // the receiver is bound (or gone: the asserts say)
      const writes = () => Number(/syscw: (\d+)/.exec(readFileSync(`/proc/${backend!.pid}/io`, 'utf8'))?.[1]);
      const sent: Buffer[] = [];
      for (let i = 0; i < N; i++) {
        const f = frame(i, 60 + ((i * 37) % 1400));
        sent.push(f, f);
        const at = 0x100000 + i * 0x1000;
        ram.bytes.set(Buffer.concat([Buffer.alloc(12), f]), at);
        p.transmitq.offer(p.transmitq.addChain([{ addr: BigInt(at), len: 12 + f.length, write: false }]));
      }
      const before = writes();
      p.transmitq.publish();
      native.eventfdWrite(p.kicks.transmitq, 1n);
      const lines = (await seen).split('\n').filter((l) => /^[0-9a-f]+$/.test(l));
      await waitFor(() => p.transmitq.usedIdx() === N, 2000, 'every chain completed');
      const calls = writes() - before;
      expect(lines).toEqual(sent.map((f) => f.toString('hex')));
      if (batched) expect(calls).toBeLessThan(N / 4);
      else expect(calls).toBeGreaterThanOrEqual(2 * N);
    },
  );

  // rx-ring: read from a TPACKET_V3 ring instead of by recvmmsg; ts: the TS data plane's port,
  // which moves the 10-byte header AF_PACKET reads down in TS.
  const RECEIVE_PATHS = [
    { options: '', datapath: 'native' },
    { options: ',rx-ring', datapath: 'native' },
    { options: '', datapath: 'ts' },
  ] as const;
  it.each(RECEIVE_PATHS)(
    'af-packet$options ($datapath data path): delivers frames from the wire into the guest buffers with a 12-byte header',
    async ({ options, datapath }) => {
      const { ram, p } = await device(0n, 'af-packet', options, ['--datapath', datapath]);
      for (let i = 0; i < 64; i++)
        p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(0x200000 + i * 2048), len: 2048, write: true }]));
      p.receiveq.publish();
      native.eventfdWrite(p.kicks.receiveq, 1n);
      const frames = Array.from({ length: COUNT }, (_, i) => frame(i, 60 + ((i * 53) % 1400)));
      await wire(ns!, ['vpb', 'send'], frames.map((f) => `${f.toString('hex')}\n`).join(''));
      await waitFor(() => p.receiveq.usedIdx() === COUNT, 5000, 'every frame used');
      for (let i = 0; i < COUNT; i++) {
        const u = p.receiveq.usedElem(i);
        const f = frames[i]!;
        expect(u.len).toBe(12 + f.length);
        const at = 0x200000 + u.id * 2048;
        const got = Buffer.from(ram.bytes.subarray(at, at + 12 + f.length));
        // No GUEST_CSUM, no GSO: flags and the GSO fields are 0 (§5.1.6.4.1).
        expect(got.subarray(0, 10).equals(Buffer.alloc(10))).toBe(true);
        expect(got.readUInt16LE(10)).toBe(1); // num_buffers
        expect(got.subarray(12).equals(f)).toBe(true);
      }
    },
  );

  // A new session makes a new port on the same socket: its ring reader starts at the oldest
  // block the kernel has handed over, not at block 0 (the kernel went on from where the last
  // reader left it; waiting at block 0 would wait for the ring to wrap).
  it('af-packet,rx-ring: a second session reads on where the first left the ring', async () => {
    const { p, sock } = await device(0n, 'af-packet', ',rx-ring');
    const offer = (pair: typeof p) => {
      for (let i = 0; i < 64; i++)
        pair.receiveq.offer(pair.receiveq.addChain([{ addr: BigInt(0x200000 + i * 2048), len: 2048, write: true }]));
      pair.receiveq.publish();
      native.eventfdWrite(pair.kicks.receiveq, 1n);
    };
    offer(p);
    const first = Array.from({ length: 8 }, (_, i) => frame(i, 80));
    await wire(ns!, ['vpb', 'send'], first.map((f) => `${f.toString('hex')}\n`).join(''));
    await waitFor(() => p.receiveq.usedIdx() === first.length, 5000, "the first session's frames used");
    fe!.close();
    fe = MockFrontend.connect(native, sock);
    await fe.handshake();
    const again = await fe.bringUp(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES), 1);
    const q = again.pairs[0]!;
    offer(q);
    const second = Array.from({ length: 8 }, (_, i) => frame(100 + i, 90));
    await wire(ns!, ['vpb', 'send'], second.map((f) => `${f.toString('hex')}\n`).join(''));
    await waitFor(() => q.receiveq.usedIdx() === second.length, 5000, "the second session's frames used");
    for (let i = 0; i < second.length; i++) {
      const u = q.receiveq.usedElem(i);
      const at = 0x200000 + u.id * 2048;
      expect(Buffer.from(again.ram.bytes.subarray(at + 12, at + u.len)).equals(second[i]!)).toBe(true);
    }
  });

  // The header the kernel writes comes through whole: the wire sends with a header asking for
  // a checksum (NEEDS_CSUM, csum_start 20, csum_offset 4), the frame crosses the veth still
  // CHECKSUM_PARTIAL, AF_PACKET's header says so, and a guest with GUEST_CSUM keeps it
  // (§5.1.6.4).
  it.each(RECEIVE_PATHS)(
    "af-packet$options ($datapath data path): with GUEST_CSUM a partial checksum's header reaches the guest",
    async ({ options, datapath }) => {
      const { ram, p } = await device(featureMask(F.NET_F_GUEST_CSUM), 'af-packet', options, ['--datapath', datapath]);
      for (let i = 0; i < 16; i++)
        p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(0x200000 + i * 2048), len: 2048, write: true }]));
      p.receiveq.publish();
      native.eventfdWrite(p.kicks.receiveq, 1n);
      const hdr = Buffer.from([1, 0, 0, 0, 0, 0, 20, 0, 4, 0]);
      const frames = Array.from({ length: 8 }, (_, i) => frame(i, 100 + i));
      const lines = frames.map((f) => `${hdr.toString('hex')}${f.toString('hex')}\n`).join('');
      await wire(ns!, ['vpb', 'send-vnet'], lines);
      await waitFor(() => p.receiveq.usedIdx() === frames.length, 5000, 'every frame used');
      for (let i = 0; i < frames.length; i++) {
        const u = p.receiveq.usedElem(i);
        const got = Buffer.from(ram.bytes.subarray(0x200000 + u.id * 2048, 0x200000 + u.id * 2048 + u.len));
        expect(got.subarray(0, 10).toString('hex')).toBe(hdr.toString('hex'));
        expect(got.readUInt16LE(10)).toBe(1);
        expect(got.subarray(12).equals(frames[i]!)).toBe(true);
      }
    },
  );

  it.each(RECEIVE_PATHS)(
    'af-packet$options ($datapath data path): spreads a wire frame larger than one buffer over several (MRG_RXBUF, num_buffers)',
    async ({ options, datapath }) => {
      const { ram, p } = await device(featureMask(F.NET_F_MRG_RXBUF), 'af-packet', options, ['--datapath', datapath]);
      const SIZE = 512;
      for (let i = 0; i < 256; i++)
        p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(0x200000 + i * SIZE), len: SIZE, write: true }]));
      p.receiveq.publish();
      native.eventfdWrite(p.kicks.receiveq, 1n);
      // Short frames (one buffer each) between long ones (up to 3 buffers).
      const frames = Array.from({ length: COUNT }, (_, i) => frame(i, i % 2 ? 60 : 600 + ((i * 97) % 900)));
      const buffers = frames.map((f) => Math.ceil((12 + f.length) / SIZE));
      const total = buffers.reduce((a, b) => a + b, 0);
      await wire(ns!, ['vpb', 'send'], frames.map((f) => `${f.toString('hex')}\n`).join(''));
      await waitFor(() => p.receiveq.usedIdx() === total, 5000, 'every buffer used');
      let u = 0;
      for (let i = 0; i < COUNT; i++) {
        const f = frames[i]!;
        const parts: Buffer[] = [];
        for (let k = 0; k < buffers[i]!; k++, u++) {
          const e = p.receiveq.usedElem(u);
          parts.push(Buffer.from(ram.bytes.subarray(0x200000 + e.id * SIZE, 0x200000 + e.id * SIZE + e.len)));
        }
        const got = Buffer.concat(parts);
        expect(got.length).toBe(12 + f.length);
        expect(got.readUInt16LE(10)).toBe(buffers[i]); // num_buffers
        expect(got.subarray(12).equals(f)).toBe(true);
      }
    },
  );

  // io-uring=auto: the TAP's write path is chosen on the machine it runs on
  // (native/write_chooser.h): both ways are measured in turns and the cheaper per frame is kept. Made slow on purpose (20 us
  // more per frame, VUN_TEST_TAP_WRITE_DELAY_NS), a way is left for the other; the counters
  // (tapPlainFrames, tapUringFrames: /status, /metrics, the log) show which one writes.
  it.each([
    { slow: 'uring', kept: 'tapPlainFrames', left: 'tapUringFrames' },
    { slow: 'plain', kept: 'tapUringFrames', left: 'tapPlainFrames' },
  ] as const)(
    'tap: with $slow writes made slower, the data path settles on the other way',
    async ({ slow, kept, left }) => {
      process.env.VUN_TEST_TAP_WRITE_DELAY_NS = `${slow}:20000`;
      let d: Awaited<ReturnType<typeof device>>;
      try {
        d = await device(0n, 'tap', ',io-uring=auto', ['--log-level', 'info']);
      } finally {
        delete process.env.VUN_TEST_TAP_WRITE_DELAY_NS;
      }
      const { ram, p } = d;
      const counters = async (): Promise<Record<string, number>> => {
        const before = backend!.output.length;
        backend!.child.kill('SIGUSR1');
        await waitFor(() => backend!.output.slice(before).includes('"vring":1,'), 5000, 'counters logged');
        const line = backend!.output
          .slice(before)
          .split('\n')
          .find((l) => l.includes('"msg":"vring counters"') && l.includes('"vring":1,'));
        return JSON.parse(line as string) as Record<string, number>;
      };
      let sent = 0;
      const bursts = async (n: number) => {
        for (let b = 0; b < n; b++) {
          transmit(
            native,
            ram,
            p,
            Array.from({ length: 16 }, (_, i) => frame(i, 200)),
          );
          sent += 16;
          await waitFor(() => p.transmitq.usedIdx() === (sent & 0xffff), 5000, 'burst completed');
        }
      };
      // Sampling takes 8 turns of 64 bursts (a first one each way to warm up); then the
      // choice holds for 10 s.
      await bursts(550);
      const a = await counters();
      await bursts(200);
      const b = await counters();
      const moved = { kept: b[kept]! - a[kept]!, left: b[left]! - a[left]! };
      console.log(`${slow} made slow: ${JSON.stringify({ kept, left, moved, totals: b })}`);
      // Both ways were tried while sampling; afterwards every frame went the other way.
      expect(a[left]).toBeGreaterThan(0);
      expect(moved.kept).toBe(200 * 16);
      expect(moved.left).toBe(0);
    },
  );
});
