/**
 * Observation on a real Linux guest (C++ data path, TAP): the guest pings the host while the
 * backend captures (--pcap), traces the rings (--trace-rings) and serves /metrics. tshark reads
 * the capture; /metrics is held to the guest's own interface counters.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bootGuest } from '../src/guest/guest.js';
import { tempDir } from '../test/helpers/harness.js';
import { packageRoot } from '../src/native.js';
import { GUEST_IP, HOST_IP, hostEnd } from '../src/guest/host-end.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const STATS = 'S=/sys/class/net/eth0/statistics; echo $(cat $S/tx_packets $S/rx_packets $S/tx_bytes $S/rx_bytes)';
const SCRIPT = `
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
ping -c 5 -W 3 ${HOST_IP} > /tmp/p 2>&1; res guest-ping $? "$(tail -2 /tmp/p | tr '\\n' ' ')"
sleep 1
res before 0 "$(${STATS})"
phase metrics
sleep 3
res after 0 "$(${STATS})"
`;

/** `name{labels} value` lines of Prometheus text, as label-string -> value for one metric. */
function metric(text: string, name: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const r = new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`).exec(line);
    if (r) m.set(r[1] as string, Number(r[2]));
  }
  return m;
}

describe('observing a Linux guest (C++ data path)', () => {
  it('captures pcapng that tshark reads, traces the rings, and /metrics matches the guest counters', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const cap = join(tmp.dir, 'guest.pcapng');
    const rings = join(tmp.dir, 'rings.jsonl');
    const { ns, sock, backend } = await hostEnd(cleanups, {
      args: ['--pcap', cap, '--trace-rings', rings, '--http', '127.0.0.1:9180'],
    });
    // Quiet links: no IPv6 chatter between the counter readings.
    ns.sh('sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
    const g = bootGuest({ socketPath: sock, script: SCRIPT, ip: `${GUEST_IP}/24` });
    cleanups.push(() => g.cleanup());
    await g.phase('metrics');
    const fetched = ns.try(
      `${process.execPath} -e "fetch('http://127.0.0.1:9180/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))"`,
    );
    const r = await g.done();
    await backend.stop();
    const ctx = `guest console:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(15)}`;
    expect(r.get('guest-ping')?.rc, ctx).toBe(0);
    expect(fetched.status, fetched.out).toBe(0);

    // /metrics against the guest's own counters, read just before and just after the scrape.
    const [b, a] = [r.get('before')?.text, r.get('after')?.text].map((t) => (t ?? '').split(' ').map(Number)) as [
      number[],
      number[],
    ];
    const frames = metric(fetched.out, 'vhost_user_net_frames_total');
    const bytes = metric(fetched.out, 'vhost_user_net_bytes_total');
    const drops = metric(fetched.out, 'vhost_user_net_drops_total');
    const txLabels = 'vring="1",queue="transmitq0"';
    const rxLabels = 'vring="0",queue="receiveq0"';
    const txDrops = [...drops].filter(([k]) => k.startsWith(txLabels)).reduce((s, [, v]) => s + v, 0);
    const fromGuest = (frames.get(txLabels) ?? -1) + txDrops;
    const toGuest = frames.get(rxLabels) ?? -1;
    console.log(
      `guest counters before ${b.join(' ')} after ${a.join(' ')}; /metrics fromGuest ${fromGuest} toGuest ${toGuest}`,
    );
    expect(fromGuest).toBeGreaterThanOrEqual(b[0] as number);
    expect(fromGuest).toBeLessThanOrEqual(a[0] as number);
    expect(toGuest).toBeGreaterThanOrEqual(b[1] as number);
    expect(toGuest).toBeLessThanOrEqual(a[1] as number);
    expect(bytes.get(txLabels)).toBeGreaterThanOrEqual(b[2] as number);
    expect(bytes.get(txLabels)).toBeLessThanOrEqual(a[2] as number);
    expect(bytes.get(rxLabels)).toBeGreaterThanOrEqual(b[3] as number);
    expect(bytes.get(rxLabels)).toBeLessThanOrEqual(a[3] as number);

    // The capture: five echo requests the guest sent, five replies it received, each with its
    // virtio-net header (Linux negotiates MRG_RXBUF: num_buffers is 1 on the receiveq).
    const rows = execFileSync(
      'tshark',
      [
        '-r',
        cap,
        '-Y',
        'icmp',
        '-T',
        'fields',
        '-E',
        'separator=\t',
        '-e',
        'frame.interface_name',
        '-e',
        'icmp.type',
        '-e',
        'frame.comment',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    )
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
    const requests = rows.filter((x) => x[0] === 'transmitq0' && x[1] === '8');
    const replies = rows.filter((x) => x[0] === 'receiveq0' && x[1] === '0');
    expect(requests).toHaveLength(5);
    expect(replies).toHaveLength(5);
    for (const x of [...requests, ...replies]) expect(x[2]).toMatch(/^virtio-net hdr: flags=\S+ gso_type=NONE /);
    for (const x of replies) expect(x[2]).toMatch(/num_buffers=1$/);
    // The same capture through the dissector (contrib/wireshark/vhost-user-net.lua): every guest
    // frame once, on the -vnet interfaces, header fields first; num_buffers 1 on each receiveq
    // frame (MRG_RXBUF); QEMU's SET_FEATURES on the vhost-user interface.
    const lua = join(packageRoot, 'contrib', 'wireshark', 'vhost-user-net.lua');
    const dissect = (filter: string, fields: string[]) =>
      execFileSync(
        'tshark',
        ['-X', `lua_script:${lua}`, '-r', cap, '-Y', filter, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
      )
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t'));
    const plain = dissect('frame.interface_name == "receiveq0" || frame.interface_name == "transmitq0"', ['frame.len']);
    const withHeader = dissect('virtio_net.gso_type == 0 && eth', ['frame.interface_name', 'virtio_net.num_buffers']);
    expect(withHeader).toHaveLength(plain.length);
    const toGuestFrames = withHeader.filter((x) => x[0] === 'receiveq0-vnet');
    expect(toGuestFrames.length).toBeGreaterThanOrEqual(5);
    expect(toGuestFrames.every((x) => x[1] === '1')).toBe(true);
    const setFeatures = dissect('vhost_user.request == 2 && vhost_user.flags.reply == 0', ['vhost_user.feature']);
    expect(setFeatures.length).toBeGreaterThanOrEqual(1);
    expect(setFeatures[0]?.[0]).toMatch(/F_VERSION_1/);
    expect(setFeatures[0]?.[0]).toMatch(/NET_F_MRG_RXBUF/);
    expect(backend.output).toMatch(/"msg":"capture closed"/);
    expect(backend.output).toMatch(/"lost":0/);

    // The ring trace of the same run: chains walked on the transmitq, used elements on the
    // receiveq, and EVENT_IDX notification decisions (Linux negotiates it).
    const trace = readFileSync(rings, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(trace.some((e) => e.vring === 1 && e.ev === 'chain' && Array.isArray(e.descs))).toBe(true);
    expect(trace.some((e) => e.vring === 0 && e.ev === 'used')).toBe(true);
    expect(trace.some((e) => e.ev === 'notify' && e.eventIdx === true && /vring_need_event/.test(String(e.why)))).toBe(
      true,
    );
  }, 300_000);
});
