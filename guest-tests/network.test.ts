/**
 * A real Linux guest (Debian's cloud kernel, virtio_net) on the backend, the host end in a
 * network namespace this test creates: ping both ways, iperf3 TCP both ways with offloads on,
 * a 9000-byte MTU ping with DF, offloads off, a driver reload, over TAP and AF_PACKET, with
 * the C++ and the TS data paths. Results are printed and written to .test-results/.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';
import { bootGuest, type GuestRun, mbits } from '../src/guest/guest.js';
import { GUEST_IP, HOST_IP, hostEnd } from '../src/guest/host-end.js';

const cleanups: (() => void | Promise<void>)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function report(name: string, data: Record<string, unknown>): void {
  const line = JSON.stringify({ test: name, ...data });
  console.log(`guest result: ${line}`);
  const dir = join(packageRoot, '.test-results');
  mkdirSync(dir, { recursive: true });
  appendFileSync(join(dir, 'guest-results.jsonl'), `${line}\n`);
}

async function withGuest(
  script: string,
  sock: string,
  hostMtu?: number,
  more: { packed?: boolean; queuePairs?: number; smp?: number } = {},
): Promise<GuestRun> {
  const g = bootGuest({ socketPath: sock, script, ip: `${GUEST_IP}/24`, hostMtu, ...more });
  cleanups.push(() => g.cleanup());
  return g;
}

const FULL = `
H=${HOST_IP}
res mtu 0 "$(cat /sys/class/net/eth0/mtu)"
ip link set eth0 mtu 1500
ping -c 3 -W 3 $H > /tmp/p 2>&1; res guest-ping $? "$(tail -2 /tmp/p | tr '\\n' ' ')"
phase host-ping
sleep 6
iperf3 -c $H -t 3 -f m > /tmp/i1 2>&1; res iperf-guest-to-host $? "$(grep receiver /tmp/i1 | tail -1)"
iperf3 -c $H -t 3 -f m -R > /tmp/i2 2>&1; res iperf-host-to-guest $? "$(grep receiver /tmp/i2 | tail -1)"
res offloads 0 "$(ethtool -k eth0 | grep -E '^(tx-checksumming|tcp-segmentation-offload|rx-checksumming):' | tr '\\n' ' ')"
ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1
iperf3 -c $H -t 2 -f m > /tmp/i3 2>&1; res iperf-offloads-off $? "$(grep receiver /tmp/i3 | tail -1)"
ethtool -K eth0 tx on sg on tso on gso on >/dev/null 2>&1
ip link set eth0 mtu 9000
/usr/bin/ping -M do -s 8972 -c 3 -W 3 $H > /tmp/j 2>&1; res ping-9000-df $? "$(tail -2 /tmp/j | tr '\\n' ' ')"
/usr/bin/ping -M do -s 9000 -c 1 -W 2 $H > /tmp/j2 2>&1; res ping-over-mtu-refused $? "$(tail -1 /tmp/j2)"
ip link set eth0 mtu 1500
rmmod virtio_net && insmod /lib/modules/virtio_net.ko; res reload $?
sleep 1
ip link set eth0 up; ip addr add $(arg vun.ip) dev eth0
ping -c 3 -W 3 $H > /tmp/r 2>&1; res ping-after-reload $? "$(tail -2 /tmp/r | tr '\\n' ' ')"
`;

describe.each(['tap', 'af-packet'] as const)('Linux guest over %s (C++ data path)', (kind) => {
  it('pings both ways, runs iperf3 both ways, jumbo frames, offloads off, driver reload', async () => {
    const { ns, sock, backend } = await hostEnd(cleanups, { kind, mtu: 9000, iperf: true });
    // host_mtu=9000: QEMU offers VIRTIO_NET_F_MTU (which we offer) and sends NET_SET_MTU.
    const g = await withGuest(FULL, sock, 9000);
    await g.phase('host-ping').catch((e) => {
      throw new Error(`${(e as Error).message}\nbackend:\n${backend.tail(30)}`);
    });
    const hostPing = ns.try(`ping -c 3 -W 3 ${GUEST_IP}`);
    const r = await g.done();
    const get = (k: string) => r.get(k) ?? { rc: -999, text: 'missing' };
    report(`${kind}/native`, {
      guestPing: get('guest-ping'),
      hostPingRc: hostPing.status,
      guestToHostMbits: mbits(get('iperf-guest-to-host').text),
      hostToGuestMbits: mbits(get('iperf-host-to-guest').text),
      offloadsOffMbits: mbits(get('iperf-offloads-off').text),
      offloads: get('offloads').text,
      negotiatedMtu: get('mtu').text,
      jumbo: get('ping-9000-df'),
      afterReload: get('ping-after-reload'),
    });
    const ctx = `guest console:\n${g.qemu.tail(40)}\nbackend:\n${backend.tail(10)}`;
    expect(get('guest-ping').rc, ctx).toBe(0);
    expect(get('mtu').text, 'the guest took the negotiated MTU').toBe('9000');
    expect(backend.output).toMatch(/"what":"mtu set","mtu":9000/);
    expect(hostPing.status, hostPing.out).toBe(0);
    expect(get('iperf-guest-to-host').rc, ctx).toBe(0);
    expect(mbits(get('iperf-guest-to-host').text)).toBeGreaterThan(0);
    expect(get('iperf-host-to-guest').rc, ctx).toBe(0);
    expect(mbits(get('iperf-host-to-guest').text)).toBeGreaterThan(0);
    expect(get('offloads').text).toMatch(/tx-checksumming: on/);
    expect(get('offloads').text).toMatch(/tcp-segmentation-offload: on/);
    expect(get('iperf-offloads-off').rc, ctx).toBe(0);
    expect(get('ping-9000-df').rc, ctx).toBe(0);
    expect(get('ping-over-mtu-refused').rc).not.toBe(0);
    expect(get('reload').rc, ctx).toBe(0);
    expect(get('ping-after-reload').rc, ctx).toBe(0);
  }, 420_000);
});

describe('Linux guest with packed rings (QEMU packed=on), 2 queue pairs, over TAP', () => {
  it('acks VIRTIO_F_RING_PACKED; pings both ways, iperf3 both ways on 2 pairs, jumbo frames, driver reload', async () => {
    const { ns, sock, backend } = await hostEnd(cleanups, { mtu: 9000, iperf: true, args: ['--queues', '2'] });
    const script = `ethtool -L eth0 combined 2; res channels $? "$(ethtool -l eth0 | grep -i combined | tail -1 | tr -d '\\t ')"\n${FULL}`;
    const g = await withGuest(script, sock, 9000, { packed: true, queuePairs: 2, smp: 2 });
    await g.phase('host-ping').catch((e) => {
      throw new Error(`${(e as Error).message}\nbackend:\n${backend.tail(30)}`);
    });
    const hostPing = ns.try(`ping -c 3 -W 3 ${GUEST_IP}`);
    const r = await g.done();
    const get = (k: string) => r.get(k) ?? { rc: -999, text: 'missing' };
    report('tap/native/packed', {
      guestPing: get('guest-ping'),
      hostPingRc: hostPing.status,
      channels: get('channels').text,
      guestToHostMbits: mbits(get('iperf-guest-to-host').text),
      hostToGuestMbits: mbits(get('iperf-host-to-guest').text),
      jumbo: get('ping-9000-df'),
      afterReload: get('ping-after-reload'),
    });
    const ctx = `guest console:\n${g.qemu.tail(40)}\nbackend:\n${backend.tail(10)}`;
    // The guest's driver took the packed layout: the backend logged it among the acked features.
    expect(backend.output).toMatch(/"what":"features acked"[^\n]*F_RING_PACKED/);
    expect(get('channels').rc, ctx).toBe(0);
    expect(get('guest-ping').rc, ctx).toBe(0);
    expect(hostPing.status, hostPing.out).toBe(0);
    expect(get('iperf-guest-to-host').rc, ctx).toBe(0);
    expect(mbits(get('iperf-guest-to-host').text)).toBeGreaterThan(0);
    expect(get('iperf-host-to-guest').rc, ctx).toBe(0);
    expect(mbits(get('iperf-host-to-guest').text)).toBeGreaterThan(0);
    expect(get('ping-9000-df').rc, ctx).toBe(0);
    expect(get('reload').rc, ctx).toBe(0);
    expect(get('ping-after-reload').rc, ctx).toBe(0);
    expect(backend.output, 'no vring broke').not.toMatch(/vring broken/);
  }, 420_000);
});

describe('Linux guest over TAP (TS reference data path)', () => {
  it('pings both ways', async () => {
    const { ns, sock, backend } = await hostEnd(cleanups, { args: ['--datapath', 'ts'] });
    const g = await withGuest(
      `ping -c 3 -W 3 ${HOST_IP} > /tmp/p 2>&1; res guest-ping $? "$(tail -2 /tmp/p | tr '\\n' ' ')"\nphase host-ping\nsleep 6\n`,
      sock,
    );
    await g.phase('host-ping');
    const hostPing = ns.try(`ping -c 3 -W 3 ${GUEST_IP}`);
    const r = await g.done();
    report('tap/ts', { guestPing: r.get('guest-ping'), hostPingRc: hostPing.status });
    expect(r.get('guest-ping')?.rc, `${g.qemu.tail(30)}\n${backend.tail(10)}`).toBe(0);
    expect(hostPing.status, hostPing.out).toBe(0);
  }, 300_000);
});
