/**
 * pcapng capture (--pcap) on both data paths, read back by tshark: one interface per vring,
 * each frame's virtio-net header in its comment, direction flags, the snap length, and
 * rotation by size. On the C++ path the workers write into observation rings that JS drains.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { RingTrace } from '../src/trace/ring-trace.js';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { describeNetHeader, PcapWriter } from '../src/trace/pcapng.js';
import { parseCommandLine } from '../src/cli/main.js';
import { bringUpDevice, native, serve, servedPerTest, tempDir, waitFor } from './helpers/harness.js';
import { transmit } from './helpers/mock-frontend.js';
import { udpFrame } from './helpers/frames.js';

const HDR = 12;
const DATA = 0x100000;

function tshark(file: string, fields: string[]): string[][] {
  const out = execFileSync(
    'tshark',
    ['-r', file, '-T', 'fields', '-E', 'separator=\t', ...fields.flatMap((f) => ['-e', f])],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return out
    .split('\n')
    .filter((l) => l.length)
    .map((l) => l.split('\t'));
}

/** What each test serves, shut down after it. */
const t = servedPerTest();

describe.each(['native', 'ts'] as const)('pcapng capture (%s data path)', (datapath) => {
  it('writes every frame both ways with its virtio-net header, readable by tshark', async () => {
    const tmp = tempDir();
    const file = join(tmp.dir, 'cap.pcapng');
    const capture = new PcapWriter(file, 2, { snapLen: 128 });
    t.srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, datapath, undefined, undefined, { capture });
    const features = featureMask(
      F.F_VERSION_1,
      F.VHOST_USER_F_PROTOCOL_FEATURES,
      F.NET_F_CSUM,
      F.NET_F_GUEST_CSUM,
      F.NET_F_MRG_RXBUF,
    );
    const d = await bringUpDevice(t.srv, features);
    t.fe = d.fe;
    const { session, ram, pairs } = d;
    const p = pairs[0] as NonNullable<(typeof pairs)[0]>;
    for (let i = 0; i < 4; i++)
      p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(DATA + i * 2048), len: 2048, write: true }]));
    p.receiveq.publish();
    native.eventfdWrite(p.kicks.receiveq, 1n);
    await waitFor(() => session.vrings[0]?.started === true, 2000, 'receiveq started');

    // Three frames: a partial checksum for the device to note, one longer than the snap
    // length, and a plain one.
    const hdrs = [Buffer.from([1, 0, 0, 0, 0, 0, 34, 0, 6, 0, 0, 0]), Buffer.alloc(HDR), Buffer.alloc(HDR)];
    transmit(native, ram, p, [udpFrame(60, 7001), udpFrame(1000, 7002), udpFrame(80, 7003)], {
      headers: hdrs,
      split: true,
    });
    await waitFor(() => p.receiveq.usedIdx() === 3, 5000, 'frames looped back');
    // Closing the session closes its data plane, which drains what is left.
    const closed = t.srv.sessionClosed();
    t.fe.close();
    await closed;
    capture.close();

    const rows = tshark(file, [
      'frame.interface_name',
      'frame.len',
      'frame.cap_len',
      'frame.packet_flags_direction',
      'udp.dstport',
      'frame.comment',
    ]);
    // Six frames on the Ethernet interfaces, the same six with their headers on the -vnet
    // ones, and the session's vhost-user messages.
    expect(rows.filter((r) => /^(receiveq|transmitq)0$/.test(r[0] as string))).toHaveLength(6);
    expect(rows.filter((r) => /^(receiveq|transmitq)0-vnet$/.test(r[0] as string))).toHaveLength(6);
    expect(rows.filter((r) => r[0] === 'vhost-user').length).toBeGreaterThan(10);
    const on = (iface: string) => rows.filter((r) => r[0] === iface);
    for (const [iface, dir, nb] of [
      ['transmitq0', '0x00000001', 0],
      ['receiveq0', '0x00000002', 1],
    ] as const) {
      const r = on(iface);
      expect(r.map((x) => x[4])).toEqual(['7001', '7002', '7003']);
      expect(r.map((x) => x[1])).toEqual(['60', '1000', '80']);
      expect(r.map((x) => x[2])).toEqual(['60', '128', '80']);
      expect(r.every((x) => x[3] === dir)).toBe(true);
      expect(r[0]?.[5]).toBe(
        `virtio-net hdr: flags=NEEDS_CSUM gso_type=NONE hdr_len=0 gso_size=0 csum_start=34 csum_offset=6 num_buffers=${nb}`,
      );
      expect(r[2]?.[5]).toBe(
        `virtio-net hdr: flags=0 gso_type=NONE hdr_len=0 gso_size=0 csum_start=0 csum_offset=0 num_buffers=${nb}`,
      );
    }
    const ifaces = execFileSync('tshark', ['-r', file, '-q', '-z', 'io,phs'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(ifaces).toMatch(/udp/);
    tmp.cleanup();
  });
});

describe.each(['native', 'ts'] as const)('fault notes (%s data path)', (datapath) => {
  it('a frame a fault changed carries the rule in its pcapng comment; the ring trace has the fault next to the steps', async () => {
    const tmp = tempDir();
    const file = join(tmp.dir, 'cap.pcapng');
    const capture = new PcapWriter(file, 2, { snapLen: 128 });
    const traced: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        traced.push(...String(chunk).split('\n').filter(Boolean));
        done();
      },
    });
    const ringTrace = new RingTrace(sink);
    t.srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, datapath, undefined, undefined, { capture, ringTrace });
    t.srv.backend.loadFaults({
      seed: 1,
      rules: [
        { name: 'flip', on: 'transmitq0', do: 'corrupt', after: 1, count: 1 },
        { name: 'gso', on: 'receiveq0', do: 'header', field: 'gso_size', value: 99, after: 2, count: 1 },
      ],
    });
    const d = await bringUpDevice(t.srv, featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES));
    t.fe = d.fe;
    const p = d.pairs[0] as NonNullable<(typeof d.pairs)[0]>;
    for (let i = 0; i < 4; i++)
      p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(DATA + i * 2048), len: 2048, write: true }]));
    p.receiveq.publish();
    native.eventfdWrite(p.kicks.receiveq, 1n);
    await waitFor(() => d.session.vrings[0]?.started === true, 2000, 'receiveq started');
    transmit(native, d.ram, p, [udpFrame(60, 7001), udpFrame(60, 7002), udpFrame(60, 7003)]);
    await waitFor(() => p.receiveq.usedIdx() === 3, 5000, 'frames looped back');
    const closed = t.srv.sessionClosed();
    t.fe.close();
    await closed;
    capture.close();
    const rows = tshark(file, ['frame.interface_name', 'udp.dstport', 'frame.comment']);
    const note = (iface: string, port: string) => rows.find((r) => r[0] === iface && r[1] === port)?.[2] ?? '';
    expect(note('transmitq0', '7002')).toMatch(/; fault: flip \(corrupt\)$/);
    expect(note('receiveq0', '7003')).toMatch(/gso_size=99 .*; fault: gso \(header\)$/);
    expect(note('transmitq0', '7001')).not.toMatch(/fault/);
    await waitFor(() => traced.some((l) => l.includes('"ev":"fault"')), 2000, 'fault events traced');
    const faults = traced
      .map((l) => JSON.parse(l) as { ev: string; rule?: string; vring: number })
      .filter((e) => e.ev === 'fault');
    expect(faults.map((e) => [e.rule, e.vring])).toEqual([
      ['flip', 1],
      ['gso', 0],
    ]);
    tmp.cleanup();
  });
});

describe('pcapng writer', () => {
  it('rotates by size and keeps the newest files, each a complete capture', () => {
    const tmp = tempDir();
    const file = join(tmp.dir, 'rot.pcapng');
    const w = new PcapWriter(file, 4, { maxBytes: 4096, keepFiles: 3 });
    for (let i = 0; i < 40; i++) {
      w.write([
        {
          vring: i % 4,
          timeNs: 1_700_000_000_000_000_000n + BigInt(i) * 1000n,
          direction: i % 2 ? 'fromGuest' : 'toGuest',
          origLen: 200,
          header: Buffer.alloc(12),
          data: udpFrame(200, 9000, i),
        },
      ]);
    }
    w.close();
    const left = readdirSync(tmp.dir).sort();
    expect(left).toHaveLength(3);
    expect(existsSync(file)).toBe(false); // the first file was rotated away
    expect(w.allFiles.map((f) => f.slice(tmp.dir.length + 1))).toEqual(
      left.slice().sort((a, b) => a.localeCompare(b, 'en', { numeric: true })),
    );
    const seen: number[] = [];
    for (const f of w.allFiles) {
      const rows = tshark(f, ['eth.src', 'frame.interface_name']);
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows.filter((x) => !(x[1] as string).endsWith('-vnet')))
        seen.push(Number.parseInt((r[0] as string).split(':')[5] as string, 16));
      expect(rows.every((r) => /^(receiveq|transmitq)[01](-vnet)?$/.test(r[1] as string))).toBe(true);
    }
    // The newest frames survive, in order, up to the last one written.
    expect(seen[seen.length - 1]).toBe(39);
    expect(seen).toEqual(seen.slice().sort((a, b) => a - b));
    expect(seen.length).toBeLessThan(40);
    tmp.cleanup();
  });

  it.each([
    ['both', ['receiveq0', 'receiveq0-vnet']],
    ['ethernet', ['receiveq0']],
    ['vnet', ['receiveq0-vnet']],
  ] as const)('--pcap-frames %s: which packets each frame makes', (frames, ifaces) => {
    const tmp = tempDir();
    const file = join(tmp.dir, 'f.pcapng');
    const w = new PcapWriter(file, 2, { frames });
    const f = {
      vring: 0,
      timeNs: 1n,
      direction: 'toGuest' as const,
      origLen: 80,
      header: Buffer.alloc(12),
      data: udpFrame(80, 5),
    };
    w.write([f, f]);
    w.close();
    expect(w.frames).toBe(2);
    const rows = tshark(file, ['frame.interface_name']).map((r) => r[0]);
    expect([...new Set(rows)].sort()).toEqual([...ifaces]);
    expect(rows).toHaveLength(2 * ifaces.length);
    expect(parseCommandLine(['--socket', '/tmp/s', '--pcap', file, '--pcap-frames', frames])).toMatchObject({
      config: { pcap: { frames } },
    });
    tmp.cleanup();
  });

  it('--pcap-frames takes both, ethernet or vnet', () => {
    expect(() => parseCommandLine(['--socket', '/tmp/s', '--pcap', '/tmp/f', '--pcap-frames', 'all'])).toThrow(
      /pcap.frames/,
    );
  });

  it('stops cleanly when a write fails: told once, frames counted as lost, no exception', () => {
    const tmp = tempDir();
    const errors: string[] = [];
    const w = new PcapWriter(join(tmp.dir, 'c.pcapng'), 2, { maxBytes: 2000, onError: (m) => errors.push(m) });
    const f = {
      vring: 0,
      timeNs: 1n,
      direction: 'toGuest' as const,
      origLen: 200,
      header: Buffer.alloc(12),
      data: udpFrame(200, 1),
    };
    w.write([f]);
    // The folder goes away: the next rotation cannot open its file.
    tmp.cleanup();
    expect(() => w.write(Array(20).fill(f))).not.toThrow();
    expect(() => w.write([f])).not.toThrow();
    expect(errors).toHaveLength(1);
    expect(w.failed).toMatch(/cannot open .*c\.1\.pcapng/);
    expect(w.frames + w.dropped).toBe(22);
    expect(w.dropped).toBeGreaterThanOrEqual(1 + 20 - 8);
    // A file that takes no bytes at all fails at start-up, with the coded error.
    expect(() => new PcapWriter('/dev/full', 2)).toThrow(/cannot write \/dev\/full/);
  });

  it('names every virtio-net header field', () => {
    const h = Buffer.from([0x03, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 2, 0]);
    expect(describeNetHeader(h)).toBe(
      'virtio-net hdr: flags=NEEDS_CSUM|DATA_VALID gso_type=TCPV4|ECN hdr_len=66 gso_size=1448 csum_start=34 csum_offset=16 num_buffers=2',
    );
    expect(describeNetHeader(h.subarray(0, 10))).not.toMatch(/num_buffers/);
  });
});
