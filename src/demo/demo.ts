/**
 * `vhost-user-net demo`: the whole thing in one minute. Builds (or reuses) a tiny Linux guest,
 * creates a network namespace with a TAP served by the backend, boots the guest under QEMU
 * with -netdev vhost-user, shows ping both ways and iperf3 both ways, prints the per-queue
 * counters and the first pings as captured (--pcap, read back by tshark), and removes
 * everything it made but the capture.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, mbits, Netns, requireRoot, startBackend, waitForLink } from '../guest/guest.js';
import type { Proc } from '../util/proc.js';
import { waitFor } from '../util/wait.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const HOST = '10.77.0.1';
const GUEST = '10.77.0.2';

const say = (s: string) => process.stdout.write(`${s}\n`);

export async function runDemo(opts: { datapath?: 'native' | 'ts'; seconds?: number } = {}): Promise<number> {
  requireRoot('the demo');
  const secs = opts.seconds ?? 5;
  const cleanups: (() => void | Promise<void>)[] = [];
  try {
    say('vhost-user-net demo: a Linux guest on a vhost-user-net backend, host end in a network namespace\n');
    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const dir = mkdtempSync(join(tmpdir(), 'vun-demo-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sock = join(dir, 'vhost-user.sock');
    const capture = join(tmpdir(), 'vun-demo.pcapng');
    const backend: Proc = startBackend(ns, sock, [
      '--backend',
      'tap:vun0',
      '--datapath',
      opts.datapath ?? 'native',
      '--pcap',
      capture,
      '--pcap-snaplen',
      '128',
    ]);
    cleanups.push(() => backend.stop().then(() => undefined));
    await waitForLink(ns, 'vun0');
    await waitFor(() => existsSync(sock), 15_000, 'the backend socket');
    ns.sh(`ip addr add ${HOST}/24 dev vun0`);
    say(`1. backend: vhost-user-net --socket ${sock} --backend tap:vun0   (in netns ${ns.name}, TAP vun0 = ${HOST})`);
    const iperf = ns.spawn('iperf3', ['-s', '-B', HOST]);
    cleanups.push(() => iperf.stop().then(() => undefined));
    say('2. booting the guest (Debian cloud kernel, busybox initramfs; built once, then cached) ...');
    const g = bootGuest({
      socketPath: sock,
      ip: `${GUEST}/24`,
      script: `
ping -c 3 -W 3 ${HOST} > /tmp/p 2>&1; res guest-ping $? "$(tail -2 /tmp/p | tr '\\n' ' ')"
phase host-ping
sleep 5
iperf3 -c ${HOST} -t ${secs} -f m > /tmp/i1 2>&1; res tx $? "$(grep receiver /tmp/i1 | tail -1)"
iperf3 -c ${HOST} -t ${secs} -f m -R > /tmp/i2 2>&1; res rx $? "$(grep receiver /tmp/i2 | tail -1)"
`,
    });
    cleanups.push(() => g.cleanup());
    await g.phase('host-ping', 180_000);
    say(
      `3. guest booted; it pinged the host: ${/VUN-RESULT guest-ping (\d+) (.*)/.exec(g.qemu.output)?.[2]?.trim() ?? '?'}`,
    );
    const hp = ns.try(`ping -c 3 -W 3 ${GUEST}`);
    say(`4. host pings the guest: ${hp.out.trim().split('\n').slice(-2).join(' ')}`);
    say(`5. iperf3 TCP, ${secs} s each way ...`);
    const r = await g.done(300_000);
    const tx = r.get('tx');
    const rx = r.get('rx');
    say(`   guest -> host: ${mbits(tx?.text ?? '').toFixed(0)} Mbit/s   (${tx?.text.trim()})`);
    say(`   host -> guest: ${mbits(rx?.text ?? '').toFixed(0)} Mbit/s   (${rx?.text.trim()})`);
    await g.qemu.stop();
    await waitFor(
      () => backend.output.includes('"msg":"vring counters"'),
      10_000,
      'the backend to report its counters',
    ).catch(() => {});
    say('6. per-queue counters of the session (from the backend):');
    say('   queue        frames       bytes   kicks  notify sent/suppressed  drops (no buffers/too big/host)');
    for (const line of backend.output.split('\n')) {
      if (!line.includes('"msg":"vring counters"')) continue;
      const c = JSON.parse(line) as Record<string, number | string>;
      say(
        `   ${String(c.queue).padEnd(11)} ${String(c.frames).padStart(7)} ${String(c.bytes).padStart(11)} ${String(c.kicks).padStart(7)}  ${String(c.notifySent).padStart(11)}/${String(c.notifySuppressed).padEnd(11)} ${c.dropNoBuffers}/${c.dropTooBig}/${c.dropHostError}`,
      );
    }
    await backend.stop(); // closes the capture
    const shark = spawnSync(
      'tshark',
      [
        '-r',
        capture,
        '-Y',
        'icmp',
        '-T',
        'fields',
        '-e',
        'frame.interface_name',
        '-e',
        '_ws.col.Info',
        '-e',
        'frame.comment',
      ],
      { encoding: 'utf8' },
    );
    if (shark.status === 0) {
      say(`7. the first pings as captured (${capture}; tshark -r it for the rest):`);
      // (tshark's -c counts packets read, not matched: take the first four here.)
      for (const l of shark.stdout.trim().split('\n').slice(0, 4)) {
        const [iface, info, comment] = l.split('\t');
        say(`   ${String(iface).padEnd(11)} ${String(info).slice(0, 58).padEnd(58)} ${comment ?? ''}`);
      }
    } else {
      say(`7. capture written to ${capture} (tshark not available to show it)`);
    }
    const ok = r.get('guest-ping')?.rc === 0 && hp.status === 0 && tx?.rc === 0 && rx?.rc === 0;
    say(
      ok
        ? '\ndemo: all traffic flowed through vhost-user-net.'
        : '\ndemo: something did not work; see the output above.',
    );
    if (!ok) say(`guest console:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(10)}`);
    return ok ? 0 : 1;
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}
