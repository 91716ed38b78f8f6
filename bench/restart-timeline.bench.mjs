// Where the time of a backend restart goes, with timestamps from each side. A TCG Linux guest
// pings the host every 10 ms through a persistent TAP while the backend is killed (SIGKILL) and
// started again VUN_BENCH_RESTARTS times (default 8), in server mode (QEMU reconnect=1) and client
// mode (QEMU server=on). For each restart, on one clock (the host's; the guest's is aligned by
// matching its ping replies to the ones tshark saw leave the TAP):
// - host: the kill;
// - backend (its log): process up (first line), listening or connected, session started, both
//   rings processing;
// - QEMU (-trace vhost_user_event, vhost_dev_stop, vhost_dev_start): the socket closed, the
//   device stopped, the socket open again, the device started;
// - guest (ip -ts monitor link): carrier down and up; its last reply before and first after;
// - TAP (tshark): the guest's first echo request after the kill.
// Results: bench/results/restart-timeline.json, each phase's median and range from the kill.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, Netns, startBackend, waitForLink } from '../dist/guest/guest.js';
import { waitFor } from '../dist/util/wait.js';
import { save, sleep, tmp } from './lib.mjs';

const RESTARTS = Number(process.env.VUN_BENCH_RESTARTS ?? 8);
const PING_S = 20 + RESTARTS * 5;

/** pino lines of a backend's output: [epoch ms, msg]. */
function backendEvents(out) {
  const ev = [];
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line);
      ev.push({ t: j.time, msg: j.msg, pid: j.pid });
    } catch {
      /* a partial line */
    }
  }
  return ev;
}

/** QEMU trace lines (log backend): PID@SEC.USEC:event args. */
function qemuEvents(out) {
  const ev = [];
  for (const m of out.matchAll(/(\d+)@(\d+)\.(\d+):(vhost_user_event|vhost_dev_start|vhost_dev_stop)([^\n]*)/g)) {
    ev.push({ t: Number(m[2]) * 1000 + Number(m[3]) / 1000, name: m[4], args: m[5].trim() });
  }
  return ev;
}

async function mode(which) {
  const ns = new Netns();
  const t = tmp();
  const cleanups = [() => ns.delete(), t.cleanup];
  try {
    const sock = join(t.dir, 'vhost.sock');
    const args = ['--backend', 'tap:vrt0,persist', ...(which === 'client' ? ['--client'] : [])];
    cleanups.unshift(() => ns.try('ip link del vrt0'));
    const qemuServer = which === 'client';
    const backends = [];
    let backend;
    if (!qemuServer) {
      backend = startBackend(ns, sock, args);
      backends.push(backend);
      await waitForLink(ns, 'vrt0');
      while (!existsSync(sock)) await sleep(20);
    }
    const g = bootGuest({
      socketPath: sock,
      ...(qemuServer ? { qemuServer: true } : { reconnect: true }),
      ip: '10.81.0.2/24',
      extraArgs: [
        '-trace',
        'enable=vhost_user_event',
        '-trace',
        'enable=vhost_dev_start',
        '-trace',
        'enable=vhost_dev_stop',
        '-msg',
        'timestamp=on',
      ],
      script: `
H=10.81.0.1
i=0; while [ $i -lt 60 ] && ! ping -c 1 -W 1 $H >/dev/null 2>&1; do i=$((i+1)); done
/usr/bin/ip -ts monitor link dev eth0 > /tmp/m 2>&1 &
${process.env.VUN_GUEST_ARP_EVICT === '0' ? 'echo 0 > /proc/sys/net/ipv4/conf/eth0/arp_evict_nocarrier' : ''}
M=$!
phase flood
/usr/bin/ping -D -i 0.01 -W 1 -w ${PING_S} $H > /tmp/p 2>&1
kill $M
# Every 50th reply (clock alignment), and the two replies around each gap over 50 ms.
awk '/bytes from/ { t = substr($1, 2, length($1) - 2); split($6, q, "="); s = q[2]; if ((s % 50) == 0 || (p != "" && t - p > 0.05)) { if (p != "" && t - p > 0.05) print "VUN-GAP", ps, p, s, t; else print "VUN-ALIGN", s, t } p = t; ps = s }' /tmp/p
sed 's/^/VUN-MON /' /tmp/m
res done 0
`,
    });
    cleanups.unshift(() => g.cleanup());
    if (qemuServer) {
      await waitFor(() => existsSync(sock) || !g.qemu.running, 60_000, "QEMU's socket");
      if (!g.qemu.running) throw new Error(`QEMU exited:\n${g.qemu.tail(20)}`);
      backend = startBackend(ns, sock, args);
      backends.push(backend);
      await waitForLink(ns, 'vrt0');
    }
    cleanups.unshift(() => backend.stop());
    ns.sh('ip addr add 10.81.0.1/24 dev vrt0 2>/dev/null || true');
    // The TAP's ICMP on the host's clock (tshark -t e): echo requests (8) and replies (0).
    const cap = ns.spawn('tshark', [
      '-i',
      'vrt0',
      '-l',
      '-n',
      '-f',
      'icmp or arp',
      '-T',
      'fields',
      '-e',
      'frame.time_epoch',
      '-e',
      'icmp.type',
      '-e',
      'icmp.seq',
      '-e',
      'arp.opcode',
      '-e',
      'arp.src.proto_ipv4',
    ]);
    cleanups.unshift(() => cap.stop('SIGINT'));
    await g.phase('flood', 180_000);
    await sleep(2000);
    const kills = [];
    for (let i = 0; i < RESTARTS; i++) {
      kills.push(Date.now());
      await backend.stop('SIGKILL');
      backend = startBackend(ns, sock, args);
      backends.push(backend);
      await waitFor(
        () => (backend.output.match(/"msg":"vring processing"/g) ?? []).length >= 2,
        20_000,
        'rings running',
      );
      await sleep(1500 + Math.floor(Math.random() * 1000));
    }
    await g.done(PING_S * 1000 + 120_000);
    await sleep(500);
    const qemuOut = g.qemu.output;
    // Guest clock -> host clock: median of (guest reply time - tshark reply time) over matched seqs.
    const hostReply = new Map();
    for (const line of cap.output.split('\n')) {
      const [te, type, seq] = line.trim().split('\t');
      if (type === '0' && seq) hostReply.set(Number(seq.split(',')[0]), Number(te) * 1000);
    }
    const offsets = [];
    const gaps = [];
    for (const m of qemuOut.matchAll(/VUN-ALIGN (\d+) ([\d.]+)/g)) {
      const h = hostReply.get(Number(m[1]));
      if (h !== undefined) offsets.push(Number(m[2]) * 1000 - h);
    }
    offsets.sort((a, b) => a - b);
    const offset = offsets[Math.floor(offsets.length / 2)] ?? 0;
    for (const m of qemuOut.matchAll(/VUN-GAP (\d+) ([\d.]+) (\d+) ([\d.]+)/g)) {
      gaps.push({
        lastReply: Number(m[2]) * 1000 - offset,
        firstReply: Number(m[4]) * 1000 - offset,
        seqs: [Number(m[1]), Number(m[3])],
      });
    }
    // ip -ts prints the guest's wall time (UTC).
    const links = [...qemuOut.matchAll(/VUN-MON \[([\d-]+)T([\d:.]+)\] \d+: eth0: <([^>]*)>/g)].map((m) => ({
      t: Date.parse(`${m[1]}T${m[2].slice(0, 12)}Z`) - offset,
      up: /LOWER_UP/.test(m[3]),
    }));
    const requests = [];
    const guestArps = [];
    for (const line of cap.output.split('\n')) {
      const [te, type, , op, src] = line.split('\t');
      if (type === '8') requests.push(Number(te) * 1000);
      if (op === '1' && src === '10.81.0.2') guestArps.push(Number(te) * 1000);
    }
    const qemuEv = qemuEvents(qemuOut);
    const rows = kills.map((k, i) => {
      const next = kills[i + 1] ?? Infinity;
      const within = (x) => x >= k && x < next;
      const b = backendEvents(backends[i + 1].output);
      const first = (pred) => b.find(pred)?.t;
      const rings = b.filter((e) => e.msg === 'vring processing').map((e) => e.t);
      const q = qemuEv.filter((e) => within(e.t));
      const gap = gaps.find((x) => x.lastReply <= k + 50 && x.firstReply > k);
      const rel = (x) => (x === undefined ? undefined : Math.round(x - k));
      return {
        backendUp: rel(b[0]?.t),
        listeningOrConnected: rel(first((e) => e.msg === 'listening' || e.msg === 'connected to front-end')),
        sessionStarted: rel(first((e) => e.msg === 'session started')),
        ringsProcessing: rel(rings[1]),
        qemuClosed: rel(q.find((e) => e.name === 'vhost_user_event' && /event: 4/.test(e.args))?.t),
        qemuStopped: rel(q.find((e) => e.name === 'vhost_dev_stop')?.t),
        qemuOpened: rel(q.find((e) => e.name === 'vhost_user_event' && /event: 1/.test(e.args))?.t),
        qemuStarted: rel(q.find((e) => e.name === 'vhost_dev_start')?.t),
        guestCarrierDown: rel(links.find((l) => within(l.t) && !l.up)?.t),
        guestCarrierUp: rel(links.find((l) => within(l.t) && l.up)?.t),
        guestArpOnTap: rel(guestArps.find((x) => within(x))),
        firstRequestOnTap: rel(
          requests.find((x) => x > k + 50 && within(x) && (gap ? x >= gap.firstReply - 1000 : true)),
        ),
        lastReplyBefore: rel(gap?.lastReply),
        firstReplyAfter: rel(gap?.firstReply),
      };
    });
    return { rows, clockOffsetMs: Math.round(offset), alignedOn: offsets.length, qemuTraceLines: qemuEv.length };
  } finally {
    for (const c of cleanups) await c();
  }
}

const summary = (rows) => {
  const keys = Object.keys(rows[0] ?? {});
  return Object.fromEntries(
    keys.map((k) => {
      const xs = rows
        .map((r) => r[k])
        .filter((x) => x !== undefined)
        .sort((a, b) => a - b);
      return [
        k,
        xs.length ? { median: xs[Math.floor(xs.length / 2)], min: xs[0], max: xs[xs.length - 1], n: xs.length } : null,
      ];
    }),
  );
};
const modes = (process.env.VUN_BENCH_MODES ?? 'server,client').split(',');
const out = {};
for (const m of modes) {
  const r = await mode(m);
  out[m] = { ...r, summary: summary(r.rows) };
  console.error(
    `${m}: (clock offset ${r.clockOffsetMs} ms over ${r.alignedOn} replies; ${r.qemuTraceLines} QEMU trace lines)`,
  );
  for (const [k, v] of Object.entries(out[m].summary))
    console.error(`  ${k.padEnd(22)} ${v ? `${v.median} (${v.min}-${v.max}, n=${v.n})` : '-'}`);
}
save('restart-timeline', {
  description: `${RESTARTS} SIGKILL restarts per mode under a TCG guest pinging every 10 ms; each event in ms after the kill, on the host's clock (guest aligned through its ping replies)`,
  ...out,
});
