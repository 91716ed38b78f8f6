// Benchmark: restarts under load. A Linux guest pings the host every 10 ms through a persistent
// TAP (`tap:NAME,persist`) while the backend is killed with SIGKILL and started again, 50 times
// (VUN_BENCH_RESTARTS), at a fixed period. Two modes: server (the backend listens, QEMU redials
// with reconnect=1) and client (QEMU listens with server=on, the restarted backend dials it).
// The outage of each restart is measured on the guest's side: the gaps between ping replies
// longer than 100 ms, from `ping -D` timestamps. A restart whose outage reaches the period did
// not recover before the next kill and counts as failed. Each mode runs with split rings and
// with packed rings (QEMU packed=on, --ring packed; they resume from the ring journal);
// VUN_BENCH_LAYOUTS picks (default split,packed).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, Netns, startBackend, waitForLink } from '../dist/guest/guest.js';
import { save, sleep, tmp } from './lib.mjs';

const RESTARTS = Number(process.env.VUN_BENCH_RESTARTS ?? 50);
const PERIOD_MS = { server: 4000, client: 3000 };
const GAP_MS = 100;

async function mode(which, layout) {
  const ns = new Netns();
  const t = tmp();
  const cleanups = [() => ns.delete(), t.cleanup];
  try {
    const sock = join(t.dir, 'vhost.sock');
    const args = [
      '--backend',
      'tap:vrs0,persist',
      '--log-level',
      'warn',
      ...(which === 'client' ? ['--client'] : []),
      ...(layout === 'packed' ? ['--ring', 'packed'] : []),
    ];
    cleanups.unshift(() => ns.try('ip link del vrs0'));
    let backend;
    const qemuServer = which === 'client';
    if (!qemuServer) {
      backend = startBackend(ns, sock, args);
      await waitForLink(ns, 'vrs0');
      while (!existsSync(sock)) await sleep(20);
    }
    const period = PERIOD_MS[which];
    const seconds = Math.ceil((RESTARTS * period) / 1000) + 12;
    const g = bootGuest({
      socketPath: sock,
      ...(qemuServer ? { qemuServer: true } : { reconnect: true }),
      packed: layout === 'packed',
      ip: '10.80.0.2/24',
      script: `
H=10.80.0.1
i=0; while [ $i -lt 60 ] && ! ping -c 1 -W 1 $H >/dev/null 2>&1; do i=$((i+1)); done
phase flood
/usr/bin/ping -D -i 0.01 -W 1 -w ${seconds} $H > /tmp/p 2>&1
res sent 0 "$(grep -E 'packets transmitted' /tmp/p)"
res gaps 0 "$(awk '/bytes from/ { t = substr($1, 2, length($1) - 2) + 0; if (p > 0 && (t - p) * 1000 > ${GAP_MS}) printf "%d ", (t - p) * 1000; p = t }' /tmp/p)"
`,
    });
    cleanups.unshift(() => g.cleanup());
    if (qemuServer) {
      // QEMU listens; the backend dials it.
      while (!existsSync(sock)) await sleep(20);
      backend = startBackend(ns, sock, args);
      await waitForLink(ns, 'vrs0');
    }
    ns.sh('ip addr add 10.80.0.1/24 dev vrs0 2>/dev/null || true');
    cleanups.unshift(() => backend.stop());
    await g.phase('flood', 180_000);
    await sleep(3000);
    const startNs = process.hrtime.bigint();
    for (let i = 0; i < RESTARTS; i++) {
      const due = startNs + BigInt(i + 1) * BigInt(period) * 1_000_000n;
      await backend.stop('SIGKILL');
      backend = startBackend(ns, sock, args);
      while (process.hrtime.bigint() < due) await sleep(20);
    }
    const r = await g.done(seconds * 1000 + 120_000);
    const gaps = (r.get('gaps')?.text ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
    const sent = /(\d+) packets transmitted, (\d+) received/.exec(r.get('sent')?.text ?? '');
    if (!sent) throw new Error(`${which}: the guest's ping did not report:\n${g.qemu.tail(30)}`);
    return { gaps, sent: Number(sent[1]), received: Number(sent[2]), period };
  } finally {
    for (const c of cleanups) await c();
  }
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : undefined;
};
const summary = (m) => ({
  restarts: RESTARTS,
  outages: m.gaps.length,
  // A restart that never recovered before the next kill merges with the next one: its outage
  // reaches the period, and fewer outages than restarts are seen.
  failed: m.gaps.filter((g) => g >= m.period).length + Math.max(0, RESTARTS - m.gaps.length),
  p50Ms: pct(m.gaps, 50),
  p95Ms: pct(m.gaps, 95),
  maxMs: pct(m.gaps, 100),
  periodMs: m.period,
  pingsSent: m.sent,
  pingsAnswered: m.received,
  outagesMs: m.gaps,
});
const LAYOUTS = (process.env.VUN_BENCH_LAYOUTS ?? 'split,packed').split(',');
const out = {};
for (const layout of LAYOUTS) {
  for (const which of ['server', 'client']) {
    const key = layout === 'split' ? which : `${which}Packed`;
    out[key] = summary(await mode(which, layout));
    const r = out[key];
    console.error(
      `restart ${key}: p50 ${r.p50Ms} p95 ${r.p95Ms} max ${r.maxMs} ms (${r.failed} failed of ${r.restarts})`,
    );
  }
}
save('restart', {
  description: `The backend killed (SIGKILL) and restarted ${RESTARTS} times under a TCG Linux guest pinging every 10 ms through a persistent TAP; outage = gap between ping replies (> ${GAP_MS} ms) seen by the guest; server mode: QEMU reconnect=1 redials; client mode: QEMU server=on, the backend dials; split rings, and packed rings (QEMU packed=on) resumed from the ring journal`,
  ...out,
});
console.log(String(out.client?.p95Ms ?? out.clientPacked?.p95Ms));
