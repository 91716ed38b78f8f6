/**
 * The commands that boot guests: `guest` (one guest, any kernel, a command or a shell) and
 * `conditions` (the fault conditions against kernels and ring layouts). Parsed here with their
 * own options; run by main.ts.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { resultLine, toJson, toJunit, toMarkdown } from '../conditions/report.js';
import { failures, runConditions } from '../conditions/runner.js';
import type { Ring } from '../conditions/catalog.js';
import { ConfigError, ErrorCode } from '../errors.js';
import type { KernelSpec } from '../guest/kernels.js';

export const GUEST_USAGE = `       vhost-user-net guest (--kernel BZIMAGE [--modules DIR] | --kernel-package NAME)
                            [--ring split|packed] [--queues N] [--faults PLAN] [--out DIR]
                            (--run 'CMD' | --shell)      (as root: a guest on the backend)
       vhost-user-net conditions [--kernel BZIMAGE | --kernel-package NAME]...
                            [--ring split|packed|split,packed] [--rows 1,2,5-9] [--jobs N]
                            [--json FILE] [--markdown FILE] [--junit FILE] [--control]`;

export interface GuestCommand {
  action: 'guest';
  kernel?: KernelSpec;
  ring: Ring;
  queues: number;
  faults?: string;
  run?: string;
  shell: boolean;
  out?: string;
}

export interface ConditionsCommand {
  action: 'conditions';
  kernels: KernelSpec[];
  rings: Ring[];
  rows?: number[];
  jobs: number;
  json?: string;
  markdown?: string;
  junit?: string;
  control: boolean;
}

const usage = (msg: string) => new ConfigError(ErrorCode.Usage, msg);

function ring(v: string): Ring {
  if (v !== 'split' && v !== 'packed') throw usage(`--ring takes split or packed, not '${v}'`);
  return v;
}

/** "1,2,5-9" -> [1, 2, 5, 6, 7, 8, 9]. */
export function parseRows(v: string): number[] {
  const rows: number[] = [];
  for (const part of v.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw usage(`--rows takes numbers and ranges (1,2,5-9), not '${part}'`);
    const a = Number(m[1]);
    const b = Number(m[2] ?? m[1]);
    for (let i = a; i <= b; i++) rows.push(i);
  }
  return rows;
}

function positive(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw usage(`${name} takes a whole number >= 1, not '${v}'`);
  return n;
}

/** The kernels in the order given (--kernel and --kernel-package may alternate). */
function kernelsInOrder(
  tokens: { kind: string; name?: string; value?: string | undefined }[],
  modules?: string,
): KernelSpec[] {
  const out: KernelSpec[] = [];
  for (const t of tokens) {
    if (t.kind !== 'option' || t.value === undefined) continue;
    if (t.name === 'kernel') out.push({ path: t.value, ...(modules ? { modules } : {}) });
    if (t.name === 'kernel-package') out.push({ package: t.value });
  }
  return out;
}

export function parseGuestCommand(argv: string[]): GuestCommand | ConditionsCommand {
  const which = argv[0] as 'guest' | 'conditions';
  let parsed;
  try {
    parsed = parseArgs({
      args: argv.slice(1),
      strict: true,
      tokens: true,
      options: {
        kernel: { type: 'string', multiple: true },
        'kernel-package': { type: 'string', multiple: true },
        modules: { type: 'string' },
        ring: { type: 'string' },
        ...(which === 'guest'
          ? {
              queues: { type: 'string' },
              faults: { type: 'string' },
              run: { type: 'string' },
              shell: { type: 'boolean' },
              out: { type: 'string' },
            }
          : {
              rows: { type: 'string' },
              jobs: { type: 'string' },
              json: { type: 'string' },
              markdown: { type: 'string' },
              junit: { type: 'string' },
              control: { type: 'boolean' },
            }),
      },
    });
  } catch (err) {
    throw usage(`${which}: ${(err as Error).message}`);
  }
  const v = parsed.values as Record<string, string | boolean | string[] | undefined>;
  const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const modules = str('modules');
  const kernels = kernelsInOrder(parsed.tokens ?? [], modules);
  if (modules && !(v.kernel as string[] | undefined)?.length) throw usage('--modules goes with --kernel BZIMAGE');
  if (which === 'guest') {
    if (kernels.length > 1) throw usage('guest boots one kernel: give one --kernel or --kernel-package');
    if (!!str('run') === !!v.shell) throw usage("guest: give either --run 'CMD' or --shell");
    return {
      action: 'guest',
      ...(kernels[0] ? { kernel: kernels[0] } : {}),
      ring: ring(str('ring') ?? 'split'),
      queues: positive(str('queues'), '--queues', 1),
      ...(str('faults') ? { faults: str('faults') as string } : {}),
      ...(str('run') ? { run: str('run') as string } : {}),
      shell: !!v.shell,
      ...(str('out') ? { out: str('out') as string } : {}),
    };
  }
  const rows = str('rows');
  return {
    action: 'conditions',
    kernels,
    rings: (str('ring') ?? 'split').split(',').map(ring),
    ...(rows ? { rows: parseRows(rows) } : {}),
    jobs: positive(str('jobs'), '--jobs', 1),
    ...(str('json') ? { json: str('json') as string } : {}),
    ...(str('markdown') ? { markdown: str('markdown') as string } : {}),
    ...(str('junit') ? { junit: str('junit') as string } : {}),
    control: !!v.control,
  };
}

/** Runs the matrix with progress on stderr; 0 when every result is expected or a documented finding. */
export async function conditionsCommand(cmd: ConditionsCommand): Promise<number> {
  const tty = process.stderr.isTTY;
  let done = 0;
  let running = 0;
  const report = await runConditions({
    kernels: cmd.kernels.length ? cmd.kernels : undefined,
    rings: cmd.rings,
    ...(cmd.rows ? { rows: cmd.rows } : {}),
    jobs: cmd.jobs,
    control: cmd.control,
    onStart: (c) => {
      running++;
      if (tty)
        process.stderr.write(`\r\x1b[K  ${done} done, ${running} running: row ${c.row} ${c.ring} on ${c.kernel} ...`);
    },
    onResult: (r) => {
      running--;
      done++;
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}${resultLine(r)}\n`);
    },
  });
  if (cmd.json) writeFileSync(cmd.json, toJson(report));
  if (cmd.markdown) writeFileSync(cmd.markdown, toMarkdown(report));
  if (cmd.junit) writeFileSync(cmd.junit, toJunit(report));
  process.stdout.write(toMarkdown(report));
  // --control: every reaction must be missing without its plan.
  const bad = cmd.control ? report.results.filter((r) => r.verdict !== 'unexpected') : failures(report);
  if (bad.length) {
    process.stderr.write(
      `vhost-user-net conditions: ${bad.length} of ${report.results.length} results ${cmd.control ? 'showed the reaction without the plan' : 'neither expected nor a documented finding'}:\n${bad.map((r) => `  row ${r.row} ${r.ring} ${r.kernel}: ${r.verdict}: ${r.reasons.join('; ')}`).join('\n')}\n`,
    );
    return 1;
  }
  process.stderr.write(
    `vhost-user-net conditions: ${report.results.length} results, ${cmd.control ? 'no reaction without its plan' : 'each expected or a documented finding'}\n`,
  );
  return 0;
}
