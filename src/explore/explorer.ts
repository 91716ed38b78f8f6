/**
 * The explorer: generated fault plans (generate.ts) against a guest kept between plans
 * (round-guest.ts), each outcome read by the oracles; a signature not seen before is replayed,
 * minimized (minimize.ts) and confirmed by three more replays. Minimizing comes before exploring
 * (worst signature first), so what is found is also made small in the time given.
 *
 * Everything lands in the output directory as it happens (state.json, plans.jsonl, one folder
 * per signature), so a run that stops is resumed by starting it again with the same directory:
 * the minutes given are the whole run's, plans continue from the next number, and plans and
 * minimizations cut short are done again.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, ErrorCode } from '../errors.js';
import type { FaultPlan } from '../faults/plan.js';
import type { GuestKernel } from '../guest/kernels.js';
import type { Ring } from '../conditions/catalog.js';
import { generatePlan } from './generate.js';
import { minimize } from './minimize.js';
import { explorerReport, referenceRows } from './report.js';
import type { ExploreState, Found, PlanRun, PlanRunner } from './types.js';

export type { ExploreState, Found } from './types.js';
import { sameSignature, severity, shows, signatureKey } from './signature.js';

export { sameSignature } from './signature.js';

/** Replays that confirm a minimized plan. */
export const CONFIRMATIONS = 3;
/** Minimization steps a failed confirmation walks back. */
const FALLBACKS = 2;

export interface ExploreOptions {
  kernel: GuestKernel;
  ring: Ring;
  minutes: number;
  seed: number;
  out: string;
  jobs?: number;
  /** Stop generating after plan number `maxPlans - 1` (default: only the minutes bound the run). */
  maxPlans?: number;
  /** Replays one minimization may spend (default 40). */
  maxReplays?: number;
  /** One runner per job. */
  runner: () => PlanRunner;
  /** Progress, one line at a time. */
  say?: (line: string) => void;
  /** Stops the run: guests are stopped at once, the plan under way is run again on resume. */
  signal?: AbortSignal;
}

function loadState(o: ExploreOptions): ExploreState {
  const file = join(o.out, 'state.json');
  const fresh: ExploreState = {
    version: 1,
    seed: o.seed,
    ring: o.ring,
    kernel: { label: o.kernel.label, release: o.kernel.release },
    minutes: o.minutes,
    nextIndex: 0,
    inFlight: [],
    plansRun: 0,
    replays: 0,
    reboots: 0,
    stalls: 0,
    elapsedMs: 0,
    found: [],
  };
  if (!existsSync(file)) return fresh;
  const s = JSON.parse(readFileSync(file, 'utf8')) as ExploreState;
  const differs = (
    [
      ['seed', s.seed, o.seed],
      ['ring', s.ring, o.ring],
      ['kernel', s.kernel.release, o.kernel.release],
    ] as const
  ).filter(([, a, b]) => a !== b);
  if (differs.length)
    throw new ConfigError(
      ErrorCode.Usage,
      `${o.out} holds a run with another ${differs.map(([k, a]) => `${k} (${a})`).join(', ')}: give a new --out, or the same options to resume`,
    );
  // Minimizations cut short start again from their original plan.
  for (const f of s.found)
    if (f.status === 'minimizing') Object.assign(f, { status: 'pending', plan: f.original.plan });
  return { ...s, minutes: o.minutes };
}

/** Runs (or resumes) an exploration; resolves with its final state (also in OUT/state.json). */
export async function explore(o: ExploreOptions): Promise<ExploreState> {
  mkdirSync(o.out, { recursive: true });
  const st = loadState(o);
  const say = o.say ?? (() => undefined);
  const started = Date.now();
  const before = st.elapsedMs;
  const elapsed = () => before + (Date.now() - started);
  const deadline = () => elapsed() >= o.minutes * 60_000;
  const minutesNow = () => Math.round(elapsed() / 600) / 100;
  const retry = st.inFlight.splice(0);
  const runners: PlanRunner[] = [];
  const rebootsBefore = st.reboots;
  const stopped = () => !!o.signal?.aborted;
  o.signal?.addEventListener('abort', () => {
    for (const r of runners) void r.stop();
  });
  const save = () => {
    st.elapsedMs = elapsed();
    st.reboots = rebootsBefore + runners.reduce((n, r) => n + r.boots, 0);
    writeFileSync(join(o.out, 'state.json'), JSON.stringify(st, null, 2));
    writeOutputs(o.out, st);
  };
  say(
    `explore: ${o.kernel.label} (${o.kernel.release}), ${o.ring} rings, seed ${o.seed}, ${o.minutes} min` +
      (before ? `, resuming at plan ${st.nextIndex} (${Math.round(before / 600) / 100} min done)` : ''),
  );

  const nextWork = (): { kind: 'minimize'; f: Found } | { kind: 'plan'; index: number } | undefined => {
    const pending = st.found
      .filter((f) => f.status === 'pending')
      .sort((a, b) => severity(a.signatures) - severity(b.signatures) || a.id - b.id)[0];
    if (stopped()) return undefined;
    if (pending) return { kind: 'minimize', f: pending };
    if (deadline()) return undefined;
    if (!retry.length && o.maxPlans !== undefined && st.nextIndex >= o.maxPlans) return undefined;
    const index = retry.shift() ?? st.nextIndex++;
    st.inFlight.push(index);
    return { kind: 'plan', index };
  };

  const worker = async (job: number) => {
    const runner = o.runner();
    runners.push(runner);
    try {
      for (let w = nextWork(); w; w = nextWork()) {
        if (w.kind === 'plan') {
          const plan = generatePlan(o.seed, w.index);
          const r = await runner.run(plan);
          if (stopped()) break;
          const f = recordPlan(st, o, w.index, plan, r, minutesNow());
          if (f) say(`  new signature #${f.id} at plan ${w.index} (${f.firstSeenAt} min): ${f.key}`);
          if (r.notReady) say(`  job ${job}: plan ${w.index}: the guest was not ready (${r.notReady.split('\n')[0]})`);
        } else {
          await minimizeFound(w.f, runner, st, o, say).catch((err: unknown) => {
            if (!stopped()) throw err;
          });
          if (stopped()) {
            // Cut short: done again from the original on resume.
            Object.assign(w.f, { status: 'pending', plan: w.f.original.plan });
            break;
          }
          writeEvidence(o.out, w.f, undefined, 'minimized');
        }
        save();
      }
    } finally {
      await runner.stop();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.jobs ?? 1) }, (_, i) => worker(i + 1)));
  save();
  if (stopped()) {
    say(`explore: stopped after ${st.plansRun} plans; start it again with the same --out to resume`);
    return st;
  }
  const perMin = (n: number) => (n / Math.max(elapsed() / 60_000, 1e-9)).toFixed(1);
  say(
    `explore: ${st.plansRun} plans in ${minutesNow()} min (${perMin(st.plansRun)} a minute; with ${st.replays} replays, ${perMin(st.plansRun + st.replays)} rounds a minute), ${st.found.length} signatures; ${join(o.out, 'report.md')}`,
  );
  return st;
}

/** One explored plan into the state and plans.jsonl; a signature not seen before is returned (pending). */
function recordPlan(
  st: ExploreState,
  o: ExploreOptions,
  index: number,
  plan: FaultPlan,
  r: PlanRun,
  minutes: number,
): Found | undefined {
  st.plansRun++;
  if (r.stalled) st.stalls++;
  st.inFlight = st.inFlight.filter((i) => i !== index);
  const line = {
    index,
    signatures: r.signatures,
    frames: r.frames,
    faults: r.faults,
    healthy: r.healthy,
    stalled: r.stalled,
    seconds: r.seconds,
    rules: plan.rules.map((x) => `${x.do}@${x.on}`),
  };
  appendFileSync(join(o.out, 'plans.jsonl'), `${JSON.stringify(line)}\n`);
  if (!r.signatures.length) return undefined;
  const known = st.found.find((f) => sameSignature(f, r));
  if (known) {
    known.seen++;
    return undefined;
  }
  const f: Found = {
    id: st.found.length + 1,
    key: signatureKey(r.signatures, r.frames),
    signatures: r.signatures,
    frames: r.frames,
    evidence: r.evidence,
    original: { index, plan },
    plan,
    status: 'pending',
    minimizeReplays: 0,
    replayed: 0,
    firstSeenAt: minutes,
    seen: 1,
    reference: referenceRows(r.signatures, plan, o.kernel.release, o.ring),
  };
  st.found.push(f);
  writeEvidence(o.out, f, r, 'original');
  return f;
}

/** Replays the original (twice at most), minimizes, confirms: the found signature's status and plan. */
async function minimizeFound(
  f: Found,
  runner: PlanRunner,
  st: ExploreState,
  o: ExploreOptions,
  say: (l: string) => void,
): Promise<void> {
  f.status = 'minimizing';
  const target = { signatures: f.signatures, frames: f.frames };
  const instead: string[] = [];
  const replay = async (p: FaultPlan) => {
    if (o.signal?.aborted) throw o.signal.reason;
    st.replays++;
    const r = await runner.run(p);
    const ok = r.signatures.length > 0 && shows(target, r);
    instead.push(signatureKey(r.signatures, r.frames));
    appendFileSync(
      join(o.out, 'replays.jsonl'),
      `${JSON.stringify({ signature: f.id, showed: ok, signatures: r.signatures, frames: r.frames, faults: r.faults, seconds: r.seconds, rules: p.rules })}\n`,
    );
    return ok;
  };
  if (!(await replay(f.original.plan)) && !(await replay(f.original.plan))) {
    f.status = 'not-reproduced';
    f.replaysShowed = instead;
    say(`  #${f.id}: the original plan did not show it again in 2 replays (they showed: ${instead.join('; ')})`);
    return;
  }
  say(`  #${f.id}: reproduces; minimizing ${f.original.plan.rules.length} rules`);
  const m = await minimize(f.original.plan, replay, { maxReplays: o.maxReplays ?? 40 });
  f.minimizeReplays = m.replays;
  // One replay accepted each step; a step the guest's timing got lucky on fails its
  // confirmation: then the step before it is confirmed (at most FALLBACKS steps back).
  let best = { plan: m.plan, ok: -1 };
  for (const plan of m.chain.slice(-1 - FALLBACKS).reverse()) {
    let ok = 0;
    for (let i = 0; i < CONFIRMATIONS; i++) if (await replay(plan)) ok++;
    if (ok > best.ok) best = { plan, ok };
    if (ok === CONFIRMATIONS) break;
  }
  f.plan = best.plan;
  f.replayed = best.ok;
  f.reference = referenceRows(f.signatures, f.plan, o.kernel.release, o.ring);
  f.status = m.exhausted ? 'not-minimized' : 'minimized';
  say(
    `  #${f.id}: ${f.plan.rules.length} rule${f.plan.rules.length === 1 ? '' : 's'} after ${m.replays} replays${m.exhausted ? ' (replay budget spent)' : ''}; confirmed ${f.replayed}/${CONFIRMATIONS}: ${JSON.stringify(f.plan.rules)}`,
  );
}

/** OUT/sig-N/: the plans, and the console and fault log of the run that showed it first. */
function writeEvidence(out: string, f: Found, r: PlanRun | undefined, what: 'original' | 'minimized'): void {
  const dir = join(out, `sig-${f.id}`);
  mkdirSync(dir, { recursive: true });
  if (what === 'original' && r) {
    writeFileSync(join(dir, 'original.json'), `${JSON.stringify(f.original.plan, null, 2)}\n`);
    writeFileSync(join(dir, 'console.txt'), r.console);
    writeFileSync(join(dir, 'faults.jsonl'), r.faultLog.map((l) => `${l}\n`).join(''));
  }
  writeFileSync(join(dir, 'plan.json'), `${JSON.stringify(f.plan, null, 2)}\n`);
}

/** OUT/signatures.json and OUT/report.md from the state. */
function writeOutputs(out: string, st: ExploreState): void {
  const doc = {
    plansRun: st.plansRun,
    minutes: Math.round(st.elapsedMs / 600) / 100,
    kernel: st.kernel,
    ring: st.ring,
    seed: st.seed,
    signatures: st.found.map((f) => ({
      id: f.id,
      signatures: f.signatures,
      frames: f.frames,
      key: f.key,
      plan: f.plan,
      original: f.original,
      status: f.status,
      replayed: f.replayed,
      of: CONFIRMATIONS,
      minimizeReplays: f.minimizeReplays,
      firstSeenAt: f.firstSeenAt,
      seen: f.seen,
      evidence: f.evidence,
      reference: f.reference,
      ...(f.replaysShowed ? { replaysShowed: f.replaysShowed } : {}),
      files: {
        plan: `sig-${f.id}/plan.json`,
        console: `sig-${f.id}/console.txt`,
        faultLog: `sig-${f.id}/faults.jsonl`,
      },
    })),
  };
  writeFileSync(join(out, 'signatures.json'), `${JSON.stringify(doc, null, 2)}\n`);
  writeFileSync(join(out, 'report.md'), explorerReport(st));
}
