// Benchmark 6: the device layer before and after its restructuring (issue "one device, written
// once"): the tree at VUN_BEFORE_REV (built here in a temporary worktree) against this tree,
// alternated in one invocation, on the three measurements the change could move:
//   ring     - testpmd virtio_user (core 1) <-> null backend (core 0), 64 B, guest-TX and
//              guest-RX (null:source=64), Mpps from testpmd;
//   tap      - testpmd virtio_user txonly 64 B -> backend -> tap:vbt0 in a namespace, frames
//              counted on the TAP;
//   guestTcp - a Linux guest's iperf3 through tap:vbt0, both directions, Mbit/s.
// Prints the after/before ratio of ring guest-TX. VUN_BEFORE_REV picks the other tree.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, mbits, Netns, waitForLink } from '../dist/guest/guest.js';
import {
  buildTree,
  load,
  median,
  ourBackend,
  ppsSamples,
  root,
  RUNS,
  save,
  SECONDS,
  sleep,
  steady,
  tapRun,
  tmp,
  virtioUserFrontend,
  waitForFile,
} from './lib.mjs';

const BEFORE = process.env.VUN_BEFORE_REV ?? 'd8b4677c5fcfe61dfaed271d7b5b9f1136a75a57';
// VUN_BENCH_ONLY=ring,tap,guest picks measurements (default all); a partial run is not saved.
const ONLY = (process.env.VUN_BENCH_ONLY ?? 'ring,tap,guest').split(',');

async function ring(tree, dir) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const rx = dir === 'guest-rx';
  const backend = ourBackend({ socket: sock, backend: rx ? 'null:source=64' : 'null', cores: '0', tree });
  await waitForFile(sock);
  const fe = virtioUserFrontend(sock, rx ? 'rxonly' : 'txonly', 64);
  await sleep((SECONDS + 2) * 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  const s = steady(ppsSamples(fe.out, rx ? 'Rx' : 'Tx'));
  if (!s.n) throw new Error(`ring ${dir}: no samples\n${fe.out.slice(-1500)}\n${backend.out.slice(-1500)}`);
  return s.median / 1e6;
}

async function tap(tree) {
  return (await tapRun({ tree })).pps / 1e6;
}

const script = `
ping -c 2 -W 3 10.77.0.1 >/dev/null 2>&1
iperf3 -c 10.77.0.1 -t ${SECONDS} -f m > /tmp/i1 2>&1; res tx $? "$(grep receiver /tmp/i1 | tail -1)"
iperf3 -c 10.77.0.1 -t ${SECONDS} -f m -R > /tmp/i2 2>&1; res rx $? "$(grep receiver /tmp/i2 | tail -1)"
`;

async function guestTcp(tree) {
  const ns = new Netns();
  const t = tmp();
  const cleanups = [() => ns.delete(), t.cleanup];
  try {
    const sock = join(t.dir, 'vhost.sock');
    const b = ns.spawn(process.execPath, [
      join(tree, 'bin', 'vhost-user-net.js'),
      '--socket',
      sock,
      '--backend',
      'tap:vbt0',
      '--log-level',
      'warn',
    ]);
    cleanups.unshift(() => b.stop());
    await waitForLink(ns, 'vbt0');
    while (!existsSync(sock)) await sleep(50);
    ns.sh('ip addr add 10.77.0.1/24 dev vbt0');
    const iperf = ns.spawn('iperf3', ['-s', '-B', '10.77.0.1']);
    cleanups.unshift(() => iperf.stop());
    const g = bootGuest({ socketPath: sock, ip: '10.77.0.2/24', script });
    cleanups.unshift(() => g.cleanup());
    const r = await g.done(300_000);
    const res = { tx: mbits(r.get('tx')?.text ?? ''), rx: mbits(r.get('rx')?.text ?? '') };
    if (!res.tx || !res.rx) throw new Error(`guest TCP: iperf3 failed:\n${g.qemu.tail(20)}`);
    return res;
  } finally {
    for (const c of cleanups) await c();
  }
}

const before = buildTree(BEFORE);
const trees = { before: before.dir, after: root };
const m = {};
const add = (what, which, v) => (m[what] ??= { before: [], after: [] })[which].push(v);
try {
  for (let r = 0; r < RUNS; r++) {
    // Alternate which tree goes first, so neither always meets a warmer or cooler machine.
    const order = r % 2 ? ['after', 'before'] : ['before', 'after'];
    for (const which of order) {
      if (ONLY.includes('ring')) {
        add('ringGuestTxMpps', which, await ring(trees[which], 'guest-tx'));
        add('ringGuestRxMpps', which, await ring(trees[which], 'guest-rx'));
      }
      if (ONLY.includes('tap')) add('tapMpps', which, await tap(trees[which]));
      if (ONLY.includes('guest')) {
        const g = await guestTcp(trees[which]);
        add('guestToHostMbits', which, g.tx);
        add('hostToGuestMbits', which, g.rx);
      }
    }
  }
} finally {
  before.remove();
}
const cases = Object.fromEntries(
  Object.entries(m).map(([k, v]) => [
    k,
    { before: median(v.before), after: median(v.after), ratio: median(v.after) / median(v.before), runs: v },
  ]),
);
const complete = ['ring', 'tap', 'guest'].every((x) => ONLY.includes(x));
// VUN_BENCH_SAVE_AS=NAME saves the run as bench/results/NAME.json whatever it measured: the same
// comparison against another tree (fault-cost: this tree with no fault plan against the tree
// before fault injection, VUN_BEFORE_REV=67f8253^).
const saveAs = process.env.VUN_BENCH_SAVE_AS;
if (saveAs) {
  save(saveAs, {
    description: `this tree (no fault plan loaded) against ${BEFORE}, alternated: ${ONLY.join(', ')}`,
    beforeRev: BEFORE,
    runs: RUNS,
    secondsPerRun: SECONDS,
    cases,
  });
} else if (!complete) {
  // A focused run (VUN_BENCH_ONLY) adds its measurements to device-layer-focused.json: more
  // runs of the cells the full run leaves in doubt.
  const prev = load('device-layer-focused')?.cases ?? {};
  save('device-layer-focused', { beforeRev: BEFORE, secondsPerRun: SECONDS, cases: { ...prev, ...cases } });
} else
  save('device-layer', {
    description: `the device layer before (${BEFORE}) and after its restructuring, alternated: ring 64 B both ways (null backend), TAP forwarding 64 B, a Linux guest's iperf3 through TAP`,
    beforeRev: BEFORE,
    runs: RUNS,
    secondsPerRun: SECONDS,
    cases,
  });
for (const [k, c] of Object.entries(cases))
  console.error(
    `${k}: before ${c.before.toFixed(3)}, after ${c.after.toFixed(3)} (${c.ratio.toFixed(3)}x); runs before ${c.runs.before.map((x) => x.toFixed(3)).join(' ')}, after ${c.runs.after.map((x) => x.toFixed(3)).join(' ')}`,
  );
console.log((cases.ringGuestTxMpps ?? Object.values(cases)[0]).ratio.toFixed(3));
