/**
 * The Wireshark dissector (contrib/wireshark/vhost-user-net.lua), run by tshark on captures
 * this backend wrote: the virtio-net header as fields on the `-vnet` interfaces (then the
 * frame, through Wireshark's Ethernet dissector), and the vhost-user messages on the
 * `vhost-user` interface, filtered by request, flags, fds and payload fields.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { featureMask, ProtocolFeature, VirtioFeature as F } from '../src/features.js';
import { packageRoot } from '../src/native.js';
import { PcapWriter } from '../src/trace/pcapng.js';
import { Request } from '../src/vhost-user/codec.js';
import { bringUpDevice, native, serve, servedPerTest, tempDir, waitFor } from './helpers/harness.js';
import { transmit } from './helpers/mock-frontend.js';
import { udpFrame } from './helpers/frames.js';

const LUA = join(packageRoot, 'contrib', 'wireshark', 'vhost-user-net.lua');

/** tshark with the dissector: rows of the fields of the packets `filter` keeps. */
function shark(file: string, filter: string, fields: string[]): string[][] {
  const out = execFileSync(
    'tshark',
    [
      '-X',
      `lua_script:${LUA}`,
      '-r',
      file,
      '-Y',
      filter,
      '-T',
      'fields',
      '-E',
      'separator=\t',
      '-E',
      'aggregator=,',
      ...fields.flatMap((f) => ['-e', f]),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return out
    .split('\n')
    .filter((l) => l.length)
    .map((l) => l.split('\t'));
}

const t = servedPerTest();

describe('Wireshark dissector (contrib/wireshark/vhost-user-net.lua)', () => {
  it('shows each frame’s virtio-net header as fields and the vhost-user messages of the session', async () => {
    const tmp = tempDir();
    const file = join(tmp.dir, 'cap.pcapng');
    const capture = new PcapWriter(file, 2, { snapLen: 256 });
    t.srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, 'native', undefined, undefined, { capture });
    const features = featureMask(
      F.F_VERSION_1,
      F.VHOST_USER_F_PROTOCOL_FEATURES,
      F.NET_F_CSUM,
      F.NET_F_GUEST_CSUM,
      F.NET_F_MRG_RXBUF,
    );
    const d = await bringUpDevice(t.srv, features);
    t.fe = d.fe;
    const p = d.pairs[0] as NonNullable<(typeof d.pairs)[0]>;
    for (let i = 0; i < 4; i++)
      p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(0x100000 + i * 2048), len: 2048, write: true }]));
    p.receiveq.publish();
    native.eventfdWrite(p.kicks.receiveq, 1n);
    await waitFor(() => d.session.vrings[0]?.started === true, 2000, 'receiveq started');
    // A frame whose checksum the device is left to finish, and two plain ones.
    const hdrs = [Buffer.from([1, 0, 0, 0, 0, 0, 34, 0, 6, 0, 0, 0]), Buffer.alloc(12), Buffer.alloc(12)];
    transmit(native, d.ram, p, [udpFrame(60, 7001), udpFrame(1000, 7002), udpFrame(80, 7003)], { headers: hdrs });
    await waitFor(() => p.receiveq.usedIdx() === 3, 5000, 'frames looped back');
    const closed = t.srv.sessionClosed();
    t.fe.close();
    await closed;
    capture.close();

    // Every guest frame, once, with its header and the Ethernet frame behind it.
    const frames = shark(file, 'virtio_net.gso_type == 0 && eth', [
      'frame.interface_name',
      'virtio_net.flags',
      'virtio_net.csum_start',
      'virtio_net.csum_offset',
      'virtio_net.num_buffers',
      'udp.dstport',
    ]);
    expect(frames.map((r) => `${r[0]} ${r[5]}`).sort()).toEqual([
      'receiveq0-vnet 7001',
      'receiveq0-vnet 7002',
      'receiveq0-vnet 7003',
      'transmitq0-vnet 7001',
      'transmitq0-vnet 7002',
      'transmitq0-vnet 7003',
    ]);
    const first = frames.find((r) => r[0] === 'transmitq0-vnet');
    expect(first?.slice(1, 4)).toEqual(['0x01', '34', '6']);
    // MRG_RXBUF: the device filled num_buffers in on the receiveq, 1 buffer per frame here.
    expect(frames.filter((r) => r[0] === 'receiveq0-vnet').map((r) => r[4])).toEqual(['1', '1', '1']);
    expect(shark(file, 'virtio_net.flags.needs_csum', ['udp.dstport']).map((r) => r[0])).toContain('7001');

    // The control channel: SET_FEATURES (2) with the acked features by name.
    // (The request and, with REPLY_ACK, its acknowledgement.)
    expect(shark(file, 'vhost_user.request == 2', ['vhost_user.flags.reply']).map((r) => r[0])).toEqual(['0', '1']);
    const setFeatures = shark(file, 'vhost_user.request == 2 && vhost_user.flags.reply == 0', [
      'vhost_user.features',
      'vhost_user.feature',
    ]);
    expect(setFeatures).toHaveLength(1);
    expect(BigInt(setFeatures[0]?.[0] as string)).toBe(features);
    expect(setFeatures[0]?.[1]?.split(',')).toEqual(
      expect.arrayContaining(['F_VERSION_1', 'NET_F_MRG_RXBUF', 'VHOST_USER_F_PROTOCOL_FEATURES']),
    );
    // The offer comes back as a reply with the REPLY flag.
    const offer = shark(file, 'vhost_user.request == 1 && vhost_user.flags.reply == 1', ['vhost_user.direction']);
    expect(offer.map((r) => r[0])).toEqual(['1']);
    // Each kick eventfd rides with its message: 1 fd, and the vring it is for.
    const kicks = shark(file, 'vhost_user.request == 12 && vhost_user.flags.reply == 0', [
      'vhost_user.fds',
      'vhost_user.vring.index',
    ]);
    expect(kicks.map((r) => r.join(' ')).sort()).toEqual(['1 0', '1 1']);
    const memory = shark(file, '(vhost_user.request == 37 || vhost_user.request == 5) && vhost_user.flags.reply == 0', [
      'vhost_user.fds',
      'vhost_user.region.guest_addr',
      'vhost_user.region.size',
    ]);
    expect(memory.length).toBeGreaterThan(0);
    expect(memory.every((r) => Number(r[0]) >= 1 && r[2] !== '')).toBe(true);
    const addrs = shark(file, 'vhost_user.request == 9 && vhost_user.flags.reply == 0', [
      'vhost_user.vring.index',
      'vhost_user.vring.desc',
    ]);
    expect(addrs.map((r) => r[0]).sort()).toEqual(['0', '1']);
    expect(addrs.every((r) => /^0x[0-9a-f]+$/.test(r[1] as string))).toBe(true);
    const acks = shark(file, 'vhost_user.ack == 0', ['vhost_user.request']);
    expect(acks.length).toBeGreaterThan(0);
    tmp.cleanup();
  });

  it('reads a legacy 10-byte header (LINKTYPE_USER1): no num_buffers, the frame right after', () => {
    const tmp = tempDir();
    const file = join(tmp.dir, 'legacy.pcapng');
    const w = new PcapWriter(file, 2);
    const header = Buffer.from([1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0]); // TCPV4, gso_size 1448
    w.write([{ vring: 1, timeNs: 1n, direction: 'fromGuest', origLen: 90, header, data: udpFrame(90, 9) }]);
    w.close();
    const rows = shark(file, 'virtio_net', [
      'frame.interface_name',
      'virtio_net.gso_type',
      'virtio_net.hdr_len',
      'virtio_net.gso_size',
      'virtio_net.csum_offset',
      'virtio_net.num_buffers',
      'udp.dstport',
    ]);
    expect(rows).toEqual([['transmitq0-vnet', '1', '54', '1448', '16', '', '9']]);
    tmp.cleanup();
  });

  it('names every request and feature bit the backend knows, with the same numbers', () => {
    const lua = readFileSync(LUA, 'utf8');
    const table = (name: string) => {
      const body = new RegExp(`local ${name} = \\{([\\s\\S]*?)\\n\\}`).exec(lua)?.[1] ?? '';
      return new Map([...body.matchAll(/\[(\d+)\] = "(\w+)"/g)].map((m) => [m[2] as string, Number(m[1])]));
    };
    expect(Object.fromEntries(table('REQUESTS'))).toEqual(Request);
    expect(Object.fromEntries(table('VIRTIO_FEATURES'))).toEqual(
      Object.fromEntries(Object.entries(F).map(([k, v]) => [k, Number(v)])),
    );
    expect(Object.fromEntries(table('PROTOCOL_FEATURES'))).toEqual(
      Object.fromEntries(Object.entries(ProtocolFeature).map(([k, v]) => [k, Number(v)])),
    );
  });
});
