/**
 * The backend killed (SIGKILL) and restarted while the guest runs: QEMU (reconnect=1)
 * redials, renegotiates and resumes the split rings at used->idx; traffic flows again. The
 * backend creates its TAP persistent (`tap:vun0,persist`), so the device and its address
 * survive the kill and the restarted backend attaches to it.
 *
 * Packed rings (QEMU packed=on) keep no position in guest memory and QEMU sends the dead
 * backend's SET_VRING_BASE again: the ring journal (--ring-state, beside the socket) is what
 * lets each restarted backend resume them. 20 kills at random moments under a ping every
 * 50 ms: every outage ends, no reply comes twice, and no ping is lost outside an outage.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir, waitFor } from '../test/helpers/harness.js';
import type { Proc } from '../src/util/proc.js';
import { bootGuest, Netns, requireRoot, startBackend, waitForLink } from '../src/guest/guest.js';
import { existsSync } from 'node:fs';
import { waitFor as waitUntil } from '../src/util/wait.js';
import type { RingSnapshot } from '../src/metrics/rings.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('backend restart under a running guest', () => {
  it('traffic resumes after the backend is killed and started again', async () => {
    requireRoot();
    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    let backend: Proc = startBackend(ns, sock, ['--backend', 'tap:vun0,persist']);
    cleanups.push(() => backend.stop().then(() => undefined));
    // A persistent TAP outlives the backend: deleted here (before the namespace).
    cleanups.push(() => void ns.try('ip link del vun0'));
    await waitForLink(ns, 'vun0');
    ns.sh('ip addr add 10.77.0.1/24 dev vun0');
    await waitFor(() => existsSync(sock), 15_000, 'backend socket');
    const g = bootGuest({
      socketPath: sock,
      reconnect: true,
      ip: '10.77.0.2/24',
      script: `
H=10.77.0.1
ping -c 3 -W 3 $H > /tmp/p 2>&1; res before $?
phase restart
# First the outage (the backend is gone), then traffic again.
i=0; while [ $i -lt 40 ] && ping -c 1 -W 1 $H >/dev/null 2>&1; do i=$((i+1)); sleep 0.5; done
res outage-seen $([ $i -lt 40 ] && echo 0 || echo 1)
i=0; ok=1; while [ $i -lt 90 ]; do ping -c 1 -W 1 $H >/dev/null 2>&1 && { ok=0; break; }; i=$((i+1)); done
res after-restart $ok "after $i tries"
ping -c 5 -W 2 $H > /tmp/p2 2>&1; res steady $? "$(tail -2 /tmp/p2 | tr '\\n' ' ')"
`,
    });
    cleanups.push(() => g.cleanup());
    await g.phase('restart');
    await new Promise((r) => setTimeout(r, 1000));
    await backend.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 3000));
    // The TAP and its address are still there with the backend gone.
    expect(ns.sh('ip -br addr show vun0')).toMatch(/10\.77\.0\.1\/24/);
    backend = startBackend(ns, sock, ['--backend', 'tap:vun0,persist']);
    const r = await g.done();
    const ctx = `guest:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(15)}`;
    console.log(`guest result: ${JSON.stringify(Object.fromEntries(r))}`);
    expect(r.get('before')?.rc, ctx).toBe(0);
    expect(r.get('outage-seen')?.rc, ctx).toBe(0);
    expect(r.get('after-restart')?.rc, ctx).toBe(0);
    expect(r.get('steady')?.rc, ctx).toBe(0);
    expect(backend.output).toMatch(/"msg":"vring processing"/);
  }, 300_000);

  it(
    'packed rings: 20 kills at random moments, pings resume each time, no duplicate, no loss outside the outages',
    async () => {
      requireRoot();
      // VUN_DEBUG_RESTARTS=1 also takes VUN_DEBUG_KILLS (more restarts, a longer ping run).
      const debug = Boolean(process.env.VUN_DEBUG_RESTARTS);
      const KILLS = debug ? Number(process.env.VUN_DEBUG_KILLS ?? 20) : 20;
      const ns = new Netns();
      cleanups.push(() => ns.delete());
      const tmp = tempDir();
      cleanups.push(tmp.cleanup);
      const sock = join(tmp.dir, 'vhost.sock');
      const args = ['--backend', 'tap:vun1,persist', '--ring', 'packed'];
      if (debug) args.push('--http', '127.0.0.1:9931', '--log-level', 'debug');
      let backend: Proc = startBackend(ns, sock, args);
      cleanups.push(() => backend.stop().then(() => undefined));
      cleanups.push(() => void ns.try('ip link del vun1'));
      await waitForLink(ns, 'vun1');
      ns.sh('ip addr add 10.77.1.1/24 dev vun1');
      await waitFor(() => existsSync(sock), 15_000, 'backend socket');
      // Replies with their times (ping -D); then in awk: outages (gaps over 300 ms between
      // replies, in ms), and stray losses: pings missing between two replies that came within
      // 300 ms of each other, each with a round trip under 300 ms (a ping held in the guest
      // through an outage comes back late, right before the ones after it).
      const PING_S = Math.max(110, Math.ceil(KILLS * 5.5));
      const g = bootGuest({
        socketPath: sock,
        reconnect: true,
        packed: true,
        ip: '10.77.1.2/24',
        script: `
H=10.77.1.1
i=0; while [ $i -lt 60 ] && ! ping -c 1 -W 1 $H >/dev/null 2>&1; do i=$((i+1)); done
res features 0 "$(cat /sys/class/net/eth0/device/features)"
phase flood
/usr/bin/ping -D -i 0.05 -W 1 -w ${PING_S} $H > /tmp/p 2>&1
res sent 0 "$(grep -E 'packets transmitted' /tmp/p)"
res dups 0 "$(grep -c 'DUP!' /tmp/p)"
res gaps 0 "$(awk '/bytes from/ && !/DUP!/ { t = substr($1, 2, length($1) - 2) + 0; split($6, q, "="); s = q[2] + 0; split($8, w, "="); r = w[2] + 0; if (p > 0) { if (t - p > 0.3) { out++; printf "%d ", (t - p) * 1000 } else if (s > ps + 1 && r < 300 && pr < 300) { stray += s - ps - 1; printf "[stray %d-%d] ", ps, s } } p = t; ps = s; pr = r } END { printf "| outages %d stray %d", out, stray + 0 }' /tmp/p)"
`,
      });
      cleanups.push(() => g.cleanup());
      await g.phase('flood', 180_000);
      // Debug: everything on the host's side of the TAP, for the whole run.
      if (debug) {
        const cap = ns.spawn('tshark', ['-ni', 'vun1', '-q', '-w', '/tmp/vun1-debug.pcapng']);
        cleanups.push(() => cap.stop().then(() => undefined));
      }
      const flooding = Date.now();
      await new Promise((r) => setTimeout(r, 2000));
      // VUN_DEBUG_RESTARTS=1 prints each backend's messages and vring events, restart by restart;
      // watches each restart's receiveq (a STALL: it takes no frame while the transmitq moves) and
      // captures the host's side of the TAP (/tmp/vun1-debug.pcapng). How a merged outage was
      // traced to the host's ARP: see docs/reliability.md.
      const logs: string[] = [];
      for (let k = 0; k < KILLS; k++) {
        if (debug) console.log(`kill ${k + 1} at ${new Date().toISOString()}`);
        await backend.stop('SIGKILL');
        logs.push(backend.output);
        backend = startBackend(ns, sock, args);
        // QEMU redials and both rings run again; then a random moment of traffic before the next kill.
        await waitUntil(
          () => (backend.output.match(/"msg":"vring processing"/g) ?? []).length >= 2,
          20_000,
          `restart ${k + 1}: both rings running`,
        ).catch((e: Error) => {
          throw new Error(`${e.message}\nbackend:\n${backend.tail(30)}\nguest:\n${g.qemu.tail(20)}`);
        });
        // The guest's pings reach the host's stack again (its ICMP InEchos counter moves), so
        // each kill makes an outage of its own.
        const echos = () => {
          const [names, values] = ns
            .sh('grep ^Icmp: /proc/net/snmp')
            .trim()
            .split('\n')
            .map((l) => l.split(/\s+/));
          return Number(values?.[names?.indexOf('InEchos') ?? -1]);
        };
        const before = echos();
        await waitUntil(() => echos() >= before + 3, 20_000, `restart ${k + 1}: the guest's pings come through`);
        // ...and the host can answer them: the TAP's carrier drop evicted the host's neighbour
        // entry for the guest, and until the guest answers one of its ARP requests (the first
        // can come while the guest's link is still coming up, and the next one leaves 1 s later)
        // the replies wait in the host. Pings getting through one way is not the outage's end.
        await waitUntil(
          () => /REACHABLE|STALE|DELAY|PROBE/.test(ns.try('ip neigh show 10.77.1.2 dev vun1').out),
          20_000,
          `restart ${k + 1}: the host resolved the guest`,
        );
        // The random wait, watched in debug mode (same timing): a receiveq that takes no frame
        // while the transmitq moves is a stall, dumped on the spot.
        const wait = 300 + Math.floor(Math.random() * 1000);
        if (debug) {
          const line = await ringLine(ns, k + 1, wait);
          if (line.includes('STALL'))
            console.log(
              `${line}\nhost before: ${ns.try('ip -s neigh show dev vun1; ip -s link show vun1').out}\n` +
                `host for 3 s (tshark on vun1):\n${ns.try('timeout 3 tshark -ni vun1 -f "arp or icmp" -t r 2>&1 | head -80').out}\n` +
                `host after: ${ns.try('ip -s neigh show dev vun1; ip -s link show vun1').out}\n${await ringLine(ns, k + 1, 10)}`,
            );
          logs.push(line);
        } else await new Promise((r) => setTimeout(r, wait));
      }
      // The kills all fell inside the guest's ping run, with time left to see traffic after the last.
      expect(Date.now() - flooding).toBeLessThan((PING_S - 10) * 1000);
      const r = await g.done(PING_S * 1000 + 120_000);
      if (process.env.VUN_DEBUG_RESTARTS) {
        logs.push(backend.output);
        logs.filter((o) => o.startsWith('rings ')).forEach((o) => console.log(o));
        logs
          .filter((o) => !o.startsWith('rings '))
          .forEach((o, i) =>
            console.log(
              `restart ${i}: ` +
                o
                  .split('\n')
                  .filter((l) => /"vring":[01][,}]/.test(l) || /"msg":"message"/.test(l))
                  .map((l) => {
                    const j = JSON.parse(l) as Record<string, unknown>;
                    if (j.msg === 'message') return String(j.request).replace('VHOST_USER_', '');
                    if (j.msg === 'vring counters')
                      return `v${j.vring} frames ${j.frames} sent ${j.notifySent} supp ${j.notifySuppressed} nobuf ${j.dropNoBuffers} kicks ${j.kicks}`;
                    return `${String(j.time).slice(-5)} v${j.vring} ${String(j.msg).slice(0, 30)} ${j.how ?? ''} ${j.reason ?? ''} ${j.position ?? ''}`;
                  })
                  .join(' | '),
            ),
          );
      }
      const ctx = `guest:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(20)}`;
      console.log(`guest result: ${JSON.stringify(Object.fromEntries(r))}`);
      // The guest drove packed rings (virtio-net's feature bits: VIRTIO_F_RING_PACKED is bit 34).
      expect(r.get('features')?.text.trim()[34], ctx).toBe('1');
      expect(r.get('dups')?.text.trim(), ctx).toBe('0');
      const gaps = r.get('gaps')?.text ?? '';
      const m = /\| outages (\d+) stray (\d+)/.exec(gaps);
      expect(m, ctx).not.toBeNull();
      // One outage per kill (a slow TCG moment may add one), each one ended: no gap is long.
      expect(Number(m?.[1]), `${ctx}\n${gaps}`).toBeGreaterThanOrEqual(KILLS);
      const longest = Math.max(...gaps.split('|')[0]!.trim().split(/\s+/).map(Number));
      expect(longest, gaps).toBeLessThan(5000);
      // No ping lost outside an outage.
      expect(Number(m?.[2]), `${ctx}\n${gaps}`).toBe(0);
      expect(backend.output).toMatch(/resuming from the ring journal/);
    },
    400_000 + Math.max(0, Number(process.env.VUN_DEBUG_KILLS ?? 20) - 20) * 8000,
  );
});

/**
 * Debug (VUN_DEBUG_RESTARTS): the receiveq as the backend's /rings reads it from guest memory,
 * after `waitMs` of traffic following a restart: positions, wrap counters, both event areas, how many descriptors are
 * offered, and the flags (A: AVAIL, U: USED) of the descriptors around the used position.
 */
async function ringLine(ns: Netns, restart: number, waitMs: number): Promise<string> {
  const frames = () => {
    const st = JSON.parse(ns.try('curl -s --max-time 2 http://127.0.0.1:9931/status').out) as {
      session?: { vrings: { counters: Record<string, number> }[] };
      vrings?: { counters: Record<string, number> }[];
    };
    const vr = st.vrings ?? st.session?.vrings ?? [];
    return vr.slice(0, 2).map((v) => v.counters);
  };
  const a = frames();
  await new Promise((r) => setTimeout(r, waitMs));
  const b = frames();
  const moved = (i: number) => (b[i]?.frames ?? 0) - (a[i]?.frames ?? 0);
  const stalled = moved(0) === 0 && moved(1) > 0 ? ' STALL' : '';
  const c = b[0] ?? {};
  const counters = Object.entries(c)
    .filter(([, n]) => n !== 0)
    .map(([k, n]) => `${k}=${n}`)
    .join(',');
  const out = ns.try('curl -s --max-time 2 http://127.0.0.1:9931/rings');
  try {
    const j = JSON.parse(out.out) as { vrings: RingSnapshot[] };
    return j.vrings
      .slice(0, 2)
      .map((v) => {
        const p = v.packed as NonNullable<RingSnapshot['packed']>;
        const around = [-3, -2, -1, 0, 1, 2, 3].map((d) => {
          const i = (p.usedPos + d + v.size) % v.size;
          const e = v.desc[i] as RingSnapshot['desc'][number];
          return `${d}:${e.flags.includes('AVAIL') ? 'A' : '-'}${e.flags.includes('USED') ? 'U' : '-'}#${e.id}`;
        });
        const offered = v.desc.filter((x) => x.state === 'avail').length;
        return `rings ${restart}${stalled} v${v.index} moved ${moved(v.index)} avail ${p.availPos}/${p.availWrap} used ${p.usedPos}/${p.usedWrap} drvEv ${p.driverEvent.offWrap & 0x7fff}/${p.driverEvent.offWrap >> 15} ${p.driverEvent.flags} devEv ${p.deviceEvent.offWrap & 0x7fff}/${p.deviceEvent.offWrap >> 15} ${p.deviceEvent.flags} offered ${offered} inflight ${v.inFlight} [${around.join(' ')}]`;
      })
      .concat(`rings ${restart}${stalled} v0 counters ${counters}`)
      .join('\n');
  } catch (e) {
    return `rings ${restart}: ${String(e)} ${out.out.slice(0, 200)}`;
  }
}
