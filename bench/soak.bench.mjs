// Soak (issue 12): full rate through the loopback backend for VUN_SOAK_MINUTES (default 30), with
// the backend's RSS, fd count, frames and drops recorded each minute. The front-end is testpmd
// with net_virtio_user in macswap mode, started with a first burst (--tx-first): every frame it
// receives goes straight back out, so a fixed population of frames circles through the
// backend's transmitq, loopback port and receiveq as fast as both sides go.
//
// Pass: RSS grows less than 5% from the end of minute 1 to the end; the fd count never moves.
//   node bench/soak.bench.mjs            -> bench/results/soak.json
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { machine, ourBackend, save, sleep, tmp, virtioUserFrontend, waitForFile } from './lib.mjs';

const MINUTES = Number(process.env.VUN_SOAK_MINUTES ?? 30);
const PORT = 19000 + (process.pid % 1000);

const t = tmp();
const sock = join(t.dir, 'vhost.sock');
const backend = ourBackend({ socket: sock, backend: 'loopback', cores: '0', extra: ['--http', `127.0.0.1:${PORT}`] });
try {
  await waitForFile(sock);
  const pmd = virtioUserFrontend(sock, 'macswap', 64, { extra: ['--tx-first', '--auto-start'] });
  try {
    // The backend runs under taskset: the node process is its child.
    const pid = await backendPid(backend.child.pid);
    const samples = [];
    const startMs = Date.now();
    await sleep(5000);
    for (let m = 1; m <= MINUTES; m++) {
      await sleep(startMs + m * 60_000 - Date.now());
      if (backend.exited) throw new Error(`the backend exited:\n${backend.out.slice(-2000)}`);
      const status = await (await fetch(`http://127.0.0.1:${PORT}/status`)).json();
      const sum = (k, vrings) => vrings.reduce((a, v) => a + Number(v.counters?.[k] ?? 0), 0);
      const vrings = status.vrings ?? [];
      const rx = vrings.filter((v) => v.index % 2 === 0);
      const tx = vrings.filter((v) => v.index % 2 === 1);
      const drops = ['dropNoBuffers', 'dropTooBig', 'dropMalformed', 'dropHostError', 'dropDisabled'];
      const s = {
        minute: m,
        rssKiB: Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]),
        fds: readdirSync(`/proc/${pid}/fd`).length,
        framesFromGuest: sum('frames', tx),
        framesToGuest: sum('frames', rx),
        drops: Object.fromEntries(drops.map((k) => [k, sum(k, vrings)])),
        ringErrors: sum('ringErrors', vrings),
      };
      samples.push(s);
      console.log(JSON.stringify(s));
    }
    const first = samples[0];
    const last = samples[samples.length - 1];
    const result = {
      description: `testpmd virtio_user macswap with a first burst (core 1) <-> vhost-user-net loopback backend (core 0), 64 B, ${MINUTES} minutes; RSS and fds of the backend process each minute`,
      machine: machine(),
      minutes: MINUTES,
      samples,
      rssGrowthPct: first && last ? ((last.rssKiB - first.rssKiB) / first.rssKiB) * 100 : undefined,
      fds: { min: Math.min(...samples.map((s) => s.fds)), max: Math.max(...samples.map((s) => s.fds)) },
      framesPerSecond: last ? Math.round((last.framesFromGuest - first.framesFromGuest) / ((MINUTES - 1) * 60)) : 0,
      ringErrors: last?.ringErrors ?? 0,
    };
    result.pass = result.rssGrowthPct !== undefined && result.rssGrowthPct < 5 && result.fds.min === result.fds.max;
    save('soak', result);
    console.log(
      `soak: ${MINUTES} min, RSS ${first?.rssKiB} -> ${last?.rssKiB} KiB (${result.rssGrowthPct?.toFixed(2)}% after minute 1), fds ${result.fds.min}..${result.fds.max}, ${result.framesPerSecond} frames/s, ${result.pass ? 'pass' : 'FAIL'}`,
    );
    if (!result.pass) process.exitCode = 1;
  } finally {
    await pmd.stop();
  }
} finally {
  await backend.stop();
  t.cleanup();
}

/** The node process under `taskset` (taskset execs it: the same pid, once it has). */
async function backendPid(pid) {
  for (let i = 0; i < 100; i++) {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    if (comm.startsWith('node')) return pid;
    await sleep(50);
  }
  throw new Error('the backend process did not start');
}
