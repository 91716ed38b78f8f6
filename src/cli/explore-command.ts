/**
 * `explore`: generated fault plans against a guest kernel, new signatures minimized and
 * confirmed (src/explore); `explore --replay PLAN`: one plan replayed on a fresh guest, with what
 * each replay showed. Parsed here; run by main.ts.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Ring } from '../conditions/catalog.js';
import { ConfigError, ErrorCode } from '../errors.js';
import { explore } from '../explore/explorer.js';
import { guestRunner } from '../explore/round-guest.js';
import { signatureKey } from '../explore/signature.js';
import { compilePlan, type FaultPlan } from '../faults/plan.js';
import { requireRoot } from '../guest/guest.js';
import { type KernelSpec, resolveKernel } from '../guest/kernels.js';

export const EXPLORE_USAGE = `       vhost-user-net explore [--kernel BZIMAGE [--modules DIR] | --kernel-package NAME]
                            [--ring split|packed] [--minutes N] [--seed S] [--jobs N]
                            [--max-replays N] --out DIR   (as root: search for plans that break the guest)
       vhost-user-net explore --replay PLAN [--times N] [--kernel ... | --kernel-package ...] [--ring ...]`;

export interface ExploreCommand {
  action: 'explore';
  kernel?: KernelSpec;
  ring: Ring;
  minutes: number;
  seed: number;
  jobs: number;
  maxReplays: number;
  out?: string;
  replay?: string;
  times: number;
}

const usage = (msg: string) => new ConfigError(ErrorCode.Usage, msg);

function whole(v: string | undefined, name: string, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw usage(`${name} takes a whole number >= ${min}, not '${v}'`);
  return n;
}

export function parseExploreCommand(argv: string[]): ExploreCommand {
  let v;
  try {
    v = parseArgs({
      args: argv.slice(1),
      strict: true,
      options: {
        kernel: { type: 'string' },
        'kernel-package': { type: 'string' },
        modules: { type: 'string' },
        ring: { type: 'string' },
        minutes: { type: 'string' },
        seed: { type: 'string' },
        jobs: { type: 'string' },
        'max-replays': { type: 'string' },
        out: { type: 'string' },
        replay: { type: 'string' },
        times: { type: 'string' },
      },
    }).values;
  } catch (err) {
    throw usage(`explore: ${(err as Error).message}`);
  }
  if (v.kernel && v['kernel-package']) throw usage('explore: give --kernel or --kernel-package, not both');
  if (v.modules && !v.kernel) throw usage('--modules goes with --kernel BZIMAGE');
  const ring = v.ring ?? 'split';
  if (ring !== 'split' && ring !== 'packed') throw usage(`--ring takes split or packed, not '${ring}'`);
  if (!v.replay && !v.out) throw usage('explore: give --out DIR (where signatures, plans and the report go)');
  const minutes = Number(v.minutes ?? 15);
  if (!(minutes > 0)) throw usage(`--minutes takes a number of minutes > 0, not '${v.minutes}'`);
  const kernel: KernelSpec | undefined = v.kernel
    ? { path: v.kernel, ...(v.modules ? { modules: v.modules } : {}) }
    : v['kernel-package']
      ? { package: v['kernel-package'] }
      : undefined;
  return {
    action: 'explore',
    ...(kernel ? { kernel } : {}),
    ring,
    minutes,
    seed: whole(v.seed, '--seed', 1, 0),
    jobs: whole(v.jobs, '--jobs', 1),
    maxReplays: whole(v['max-replays'], '--max-replays', 40),
    ...(v.out ? { out: v.out } : {}),
    ...(v.replay ? { replay: v.replay } : {}),
    times: whole(v.times, '--times', 3),
  };
}

/** Runs an exploration (0 when it ran; its findings are in OUT), or replays a plan. */
export async function exploreCommand(cmd: ExploreCommand): Promise<number> {
  requireRoot('explore');
  const kernel = resolveKernel(cmd.kernel);
  const say = (l: string) => process.stderr.write(`${l}\n`);
  if (cmd.replay) return replay(cmd, kernel);
  // Ctrl-C or SIGTERM: the guests and backends are stopped, what was done is kept for a resume.
  const ac = new AbortController();
  const stop = () => ac.abort(new Error('stopped'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await explore({
    kernel,
    ring: cmd.ring,
    minutes: cmd.minutes,
    seed: cmd.seed,
    out: cmd.out as string,
    jobs: cmd.jobs,
    maxReplays: cmd.maxReplays,
    runner: () => guestRunner(kernel, cmd.ring),
    say,
    signal: ac.signal,
  });
  return ac.signal.aborted ? 130 : 0;
}

/** `--replay PLAN`: the plan `times` times, each on a fresh guest; one line per replay. */
async function replay(cmd: ExploreCommand, kernel: ReturnType<typeof resolveKernel>): Promise<number> {
  const plan = compilePlan(JSON.parse(readFileSync(cmd.replay as string, 'utf8')), 2, cmd.replay).plan as FaultPlan;
  for (let i = 1; i <= cmd.times; i++) {
    const runner = guestRunner(kernel, cmd.ring);
    try {
      const r = await runner.run(plan);
      process.stdout.write(
        `replay ${i}/${cmd.times}: ${signatureKey(r.signatures, r.frames)} (${r.faults} faults, ${r.seconds.toFixed(1)} s${r.healthy ? '' : ', guest left unhealthy'})\n`,
      );
      for (const [s, e] of Object.entries(r.evidence)) process.stdout.write(`  ${s}: ${e}\n`);
    } finally {
      await runner.stop();
    }
  }
  return 0;
}
