// The fault room's cost (issue "one fault room"), 64 B frames, split rings: VM-free ring
// throughput guest-TX and guest-RX, and vhost-user -> TAP forwarding, for three backends
// alternated round by round in one run:
//   before - the tree at VUN_BEFORE_REV (built in a temporary worktree), no fault plan;
//   after  - this tree, no fault plan (the pair holds no fault room);
//   plan   - this tree with a plan whose only rule is on the other vring of the pair (the pair
//            holds a room; the measured vring has no rule), so every event pays the room's test.
// Reports Mpps and the backend's CPU ms per million frames, each with median and spread, and
// the per-round ratios after/before and plan/after of CPU per frame. Saved as
// bench/results/fault-room.json.
//   VUN_BEFORE_REV=5898ba9 VUN_BENCH_RUNS=5 node bench/fault-room.bench.mjs
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildTree, median, ringRun, RUNS, save, SECONDS, spread, tapRun, tmp } from './lib.mjs';

const BEFORE = process.env.VUN_BEFORE_REV;
if (!BEFORE) throw new Error('fault-room: set VUN_BEFORE_REV to the tree before the fault room');
const DIRS = (process.env.VUN_BENCH_DIRS ?? 'guest-tx,guest-rx,tap').split(',');

// A rule that never fires on the vring the measurement does not use: the transmitq (1) when the
// guest receives, the receiveq (0) when it sends (ring guest-tx and tap).
function planFile(dir) {
  const t = tmp();
  const on = dir === 'guest-rx' ? 'transmitq0' : 'receiveq0';
  const file = join(t.dir, 'plan.json');
  writeFileSync(file, JSON.stringify({ seed: 1, rules: [{ name: 'other', on, do: 'drop', probability: 0.0 }] }));
  return { file, cleanup: t.cleanup };
}

const base = buildTree(BEFORE);
const cases = {};
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
save('fault-room', {
  description: `64 B, split rings, VM-free ring both ways and TAP forwarding: the tree before the fault room (${BEFORE}), this tree without a plan, and this tree with a plan whose only rule is on the pair's other vring, alternated`,
  beforeRev: BEFORE,
  runs: RUNS,
  secondsPerRun: SECONDS,
  cases,
});
