// The fault room's cost (issue "one fault room"), 64 B frames, split rings: VM-free ring
// throughput guest-TX and guest-RX, and vhost-user -> TAP forwarding, for three backends
// alternated round by round in one run:
//   before - the tree at VUN_BEFORE_REV (built in a temporary worktree), no fault plan;
//   after  - this tree, no fault plan (the pair holds no fault room);
//   plan   - this tree with a plan whose only rule is on the other vring of the pair (the pair
//            holds a room; the measured vring has no rule), so every event pays the room's test.
// Reports Mpps and the backend's CPU ms per million frames, each with median and spread, and
// the per-round ratios after/before and plan/after of CPU per frame. Then, for the ring both ways,
// the plan's cost within one run: one backend and one front-end for the whole measurement, the
// plan loaded (PUT /faults) and cleared (DELETE /faults) in alternating windows, CPU per frame
// taken per window from the backend's CPU time and its own frame counter (/status): what moves
// between processes (placement, start-up, the shared machine's other load) cancels out.
// Saved as bench/results/fault-room.json.
//   VUN_BEFORE_REV=5898ba9 VUN_BENCH_RUNS=5 node bench/fault-room.bench.mjs
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildTree,
  cpuSeconds,
  median,
  ourBackend,
  ringRun,
  RUNS,
  save,
  SECONDS,
  sleep,
  spread,
  tapRun,
  testpmd,
  tmp,
  waitForFile,
} from './lib.mjs';

const BEFORE = process.env.VUN_BEFORE_REV;
if (!BEFORE && process.env.VUN_BENCH_PART !== 'toggled')
  throw new Error('fault-room: set VUN_BEFORE_REV to the tree before the fault room');
const DIRS = (process.env.VUN_BENCH_DIRS ?? 'guest-tx,guest-rx,tap').split(',');

// A rule that never fires on the vring the measurement does not use: the transmitq (1) when the
// guest receives, the receiveq (0) when it sends (ring guest-tx and tap).
function planFile(dir) {
  const t = tmp();
  const on = dir === 'guest-rx' ? 'transmitq0' : 'receiveq0';
  const file = join(t.dir, 'plan.json');
  const text = JSON.stringify({ seed: 1, rules: [{ name: 'other', on, do: 'drop', probability: 0.0 }] });
  writeFileSync(file, text);
  return { file, text, cleanup: t.cleanup };
}

const WINDOWS = Number(process.env.VUN_BENCH_WINDOWS ?? 20);
const WINDOW_MS = 3000;

/**
 * The plan toggled in one run: windows alternate without and with it; returns each pair of
 * windows' CPU per frame, plan / none.
 */
async function toggled(dir) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const rx = dir === 'guest-rx';
  const port = 9400 + (process.pid % 500);
  const url = `http://127.0.0.1:${port}`;
  const backend = ourBackend({
    socket: sock,
    backend: rx ? 'null:source=64' : 'null',
    cores: '0',
    extra: ['--http', `127.0.0.1:${port}`],
  });
  await waitForFile(sock);
  const fe = testpmd({
    fwdCore: 1,
    mainCore: 0,
    vdevs: [`net_virtio_user0,path=${sock},queues=1`],
    mode: rx ? 'rxonly' : 'txonly',
    txpkts: 64,
  });
  const vring = rx ? 0 : 1;
  const frames = async () => {
    const st = await (await fetch(`${url}/status`)).json();
    return st.vrings?.find((v) => v.index === vring)?.counters.frames ?? 0;
  };
  const pf = planFile(dir);
  const plan = JSON.parse(pf.text);
  pf.cleanup();
  const cost = { none: [], plan: [] };
  // Beside the whole process: all but its main (JS) thread, that is the data-plane thread
  // (and Node's few helper threads).
  const pid = backend.child.pid;
  const workerCpu = () => cpuSeconds(pid) - cpuSeconds(`${pid}/task/${pid}`);
  const worker = { none: [], plan: [] };
  try {
    await sleep(2000);
    for (let w = 0; w < WINDOWS; w++) {
      const on = w % 2 === 1;
      await fetch(`${url}/faults`, on ? { method: 'PUT', body: JSON.stringify(plan) } : { method: 'DELETE' });
      await sleep(500); // the threads restarted with the plan (or without): settle
      const f0 = await frames();
      const c0 = cpuSeconds(backend.child.pid);
      const w0 = workerCpu();
      await sleep(WINDOW_MS);
      const f1 = await frames();
      const c1 = cpuSeconds(backend.child.pid);
      const w1 = workerCpu();
      cost[on ? 'plan' : 'none'].push(((c1 - c0) * 1000) / ((f1 - f0) / 1e6));
      worker[on ? 'plan' : 'none'].push(((w1 - w0) * 1000) / ((f1 - f0) / 1e6));
    }
  } finally {
    await fe.stop();
    await backend.stop();
    t.cleanup();
  }
  const ratios = cost.plan.map((x, i) => x / cost.none[i]);
  const workerRatios = worker.plan.map((x, i) => x / worker.none[i]);
  return {
    windows: WINDOWS,
    windowMs: WINDOW_MS,
    cpuMsPerMframe: cost,
    workerCpuMsPerMframe: worker,
    planOverNone: { ...spread(ratios), rounds: ratios },
    workerPlanOverNone: { ...spread(workerRatios), rounds: workerRatios },
  };
}

// VUN_BENCH_PART=toggled measures only the toggled plan (saved as fault-room-toggled.json).
const PART = process.env.VUN_BENCH_PART ?? 'all';
const cases = {};
const base = PART === 'toggled' ? undefined : buildTree(BEFORE);
if (base)
  try {
    for (const dir of DIRS) {
      const plan = planFile(dir);
      const runs = { before: [], after: [], plan: [] };
      const run = (o) => (dir === 'tap' ? tapRun(o) : ringRun({ impl: 'ours', dir, size: 64, ...o }));
      for (let r = 0; r < RUNS; r++) {
        runs.before.push(await run({ tree: base.dir }));
        runs.after.push(await run({}));
        runs.plan.push(await run({ extra: ['--faults', plan.file] }));
      }
      plan.cleanup();
      const cpu = (k) => runs[k].map((x) => x.cpuMsPerMframe);
      const pps = (k) => runs[k].map((x) => x.pps / 1e6);
      const perRound = (a, b) => cpu(a).map((x, i) => x / cpu(b)[i]);
      cases[dir] = {
        mpps: Object.fromEntries(Object.keys(runs).map((k) => [k, spread(pps(k))])),
        cpuMsPerMframe: Object.fromEntries(Object.keys(runs).map((k) => [k, spread(cpu(k))])),
        cpuAfterOverBefore: { ...spread(perRound('after', 'before')), rounds: perRound('after', 'before') },
        cpuPlanOverAfter: { ...spread(perRound('plan', 'after')), rounds: perRound('plan', 'after') },
        runs,
      };
      const c = cases[dir];
      console.error(
        `${dir}: Mpps before ${c.mpps.before.median.toFixed(2)}, after ${c.mpps.after.median.toFixed(2)}, plan ${c.mpps.plan.median.toFixed(2)}; ` +
          `CPU per frame after/before ${median(c.cpuAfterOverBefore.rounds).toFixed(3)} (${c.cpuAfterOverBefore.min.toFixed(3)}-${c.cpuAfterOverBefore.max.toFixed(3)}), ` +
          `plan/after ${median(c.cpuPlanOverAfter.rounds).toFixed(3)} (${c.cpuPlanOverAfter.min.toFixed(3)}-${c.cpuPlanOverAfter.max.toFixed(3)})`,
      );
    }
  } finally {
    base.remove();
  }
const toggledCases = {};
for (const dir of DIRS.filter((d) => d !== 'tap')) {
  toggledCases[dir] = await toggled(dir);
  const c = toggledCases[dir].planOverNone;
  console.error(
    `${dir}, plan toggled in one run (${WINDOWS} windows): CPU per frame plan/none ${c.median.toFixed(3)} (${c.min.toFixed(3)}-${c.max.toFixed(3)}); all but the JS thread ${toggledCases[dir].workerPlanOverNone.median.toFixed(3)} (${toggledCases[dir].workerPlanOverNone.min.toFixed(3)}-${toggledCases[dir].workerPlanOverNone.max.toFixed(3)})`,
  );
}
save(PART === 'toggled' ? 'fault-room-toggled' : 'fault-room', {
  description: `64 B, split rings, VM-free ring both ways and TAP forwarding: the tree before the fault room (${BEFORE}), this tree without a plan, and this tree with a plan whose only rule is on the pair's other vring, alternated`,
  beforeRev: BEFORE,
  runs: RUNS,
  secondsPerRun: SECONDS,
  cases,
  toggled: toggledCases,
});
