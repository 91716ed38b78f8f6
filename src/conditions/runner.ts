/**
 * Runs fault conditions against guest kernels and ring layouts: each cell of the matrix is a
 * fresh host end (namespace, TAP, backend with the plan) and a fresh guest, watched until its
 * script ends or it hangs; the reaction is classified by the oracles (signatures.ts) and held to
 * the condition's outcome for that kernel series and ring (catalog.ts).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FaultPlan } from '../faults/plan.js';
import { bootGuest, type GuestRun, guestResults, type Netns } from '../guest/guest.js';
import { GUEST_IP, HOST_IP, hostEnd } from '../guest/host-end.js';
import {
  DEFAULT_KERNEL_PACKAGE,
  type GuestKernel,
  type KernelSpec,
  kernelReport,
  resolveKernel,
} from '../guest/kernels.js';
import { ConfigError, ErrorCode } from '../errors.js';
import {
  type Condition,
  conditionByRow,
  CONDITIONS,
  forbidden,
  HELPERS,
  Mismatch,
  type Outcome,
  outcomeFor,
  type Ring,
} from './catalog.js';
import { classify, COUNTERS_SH, HANG, parseCounters, type Signature, stackFrames } from './signatures.js';

export type Verdict = 'expected' | 'finding' | 'unexpected' | 'error';

export interface ConditionResult {
  row: number;
  ring: Ring;
  /** The guest's `uname -r`. */
  kernel: string;
  /** How the kernel was named (package or path). */
  kernelLabel: string;
  verdict: Verdict;
  signatures: Signature[];
  /** What the guest did, in words (the condition's check, or the signatures' evidence). */
  observed: string;
  /** The console line or counter change behind each signature. */
  evidence: Partial<Record<Signature, string>>;
  /** What this kernel and ring are held to. */
  expected: Outcome;
  /** Why a result is unexpected or an error. */
  reasons: string[];
  /** Faults the plan injected. */
  faults: number;
  seconds: number;
}

export interface ConditionsReport {
  kernels: { label: string; release: string }[];
  results: ConditionResult[];
  /** Run with empty plans (every reaction must then be missing). */
  control: boolean;
}

export interface ConditionsOptions {
  /** Default: Debian 12's cloud kernel. */
  kernels?: (KernelSpec | undefined)[] | undefined;
  /** Default: split. */
  rings?: Ring[];
  /** Default: every condition whose `rings` has the ring; rows named here run on every ring asked. */
  rows?: number[];
  /** Guests at once (default 1). */
  jobs?: number;
  /** Empty plans: shows each reaction is the plan's (each result is then unexpected). */
  control?: boolean;
  /** Told as each cell starts and ends (progress). */
  onStart?: (cell: { row: number; ring: Ring; kernel: string }) => void;
  onResult?: (r: ConditionResult) => void;
}

/** The backend's HTTP port inside each cell's namespace. */
export const HTTP_PORT = 9478;
const TIMEOUT_MS = 150_000;
/** After a hang shows, how long its stack trace is given to reach the console. */
export const HANG_GRACE_MS = 4_000;

const PROLOGUE = `${COUNTERS_SH}
res vun-before 0 "$(counters)"
`;
/** Counters after; then the host clears the plan and the guest sees whether traffic flows. */
const EPILOGUE = `
res vun-after 0 "$(counters)"
phase vun-clear
sleep 1.5
alive=1; for i in 1 2 3 4 5; do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 && { alive=0; break; }; done
res vun-alive $alive
`;

/** GET, PUT or DELETE /faults on the backend's HTTP endpoint inside the namespace. */
export async function faultsRequest(ns: Netns, method: 'GET' | 'PUT' | 'DELETE', body?: unknown): Promise<string> {
  const js = `fetch('http://127.0.0.1:${HTTP_PORT}/faults',{method:'${method}'${body ? `,body:process.argv[1]` : ''}}).then(async r=>{const t=await r.text();process.stdout.write(t);process.exit(r.ok?0:1)})`;
  const r = await ns.run(`${process.execPath} -e "${js}" '${body ? JSON.stringify(body) : ''}'`);
  if (r.status !== 0) throw new Error(`${method} /faults failed: ${r.out}`);
  return r.out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Watches a guest to the end of its script, or its hang: serves its `phase serve` (a timed plan,
 * a host command), clears the plan at `phase vun-clear`.
 */
async function watch(
  c: Condition,
  g: GuestRun,
  ns: Netns,
  control: boolean,
  t0: number,
): Promise<{ host: string; timedOut: boolean }> {
  let served = !(c.host || c.midPlan);
  let cleared = false;
  let hungAt = 0;
  let host = '';
  let timedOut = false;
  for (;;) {
    const out = g.qemu.output;
    if (!served && out.includes('VUN-PHASE serve')) {
      served = true;
      if (c.midPlan) {
        const { sessionMs } = JSON.parse(await faultsRequest(ns, 'GET')) as { sessionMs: number };
        const plan: FaultPlan = c.midPlan(sessionMs);
        await faultsRequest(ns, 'PUT', control ? { seed: plan.seed, rules: [] } : plan);
      }
      if (c.host) host = (await ns.run(c.host)).out;
    }
    if (!cleared && out.includes('VUN-PHASE vun-clear')) {
      cleared = true;
      await faultsRequest(ns, 'DELETE');
    }
    if (out.includes('VUN-DONE') || !g.qemu.running) break;
    if (HANG.test(out)) {
      hungAt ||= Date.now();
      if (Date.now() - hungAt > HANG_GRACE_MS) break;
    }
    if (Date.now() - t0 > TIMEOUT_MS) {
      timedOut = true;
      break;
    }
    await sleep(100);
  }
  return { host, timedOut };
}

/** One cell: a fresh host end and guest, watched to the end of the script or a hang. */
async function runCell(c: Condition, kernel: GuestKernel, ring: Ring, control: boolean): Promise<ConditionResult> {
  const t0 = Date.now();
  const cleanups: (() => void | Promise<void>)[] = [];
  const base = {
    row: c.row,
    ring,
    kernelLabel: kernel.label,
    kernel: kernel.release,
    expected: outcomeFor(c, kernel.release, ring),
  };
  try {
    const dir = mkdtempSync(join(tmpdir(), 'vun-cond-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const planFile = join(dir, 'plan.json');
    const logFile = join(dir, 'faults.jsonl');
    writeFileSync(planFile, JSON.stringify(control ? { seed: c.plan.seed, rules: [] } : c.plan));
    writeFileSync(logFile, '');
    const { ns, sock, backend } = await hostEnd(cleanups, {
      args: [
        '--faults',
        planFile,
        '--fault-log',
        logFile,
        '--http',
        `127.0.0.1:${HTTP_PORT}`,
        // Packed required: a guest that fell back to split would not be this cell.
        ...(ring === 'packed' ? ['--ring', 'packed'] : ['--ring', 'split']),
      ],
      iperf: c.iperf,
      quiet: true,
    });
    const g = bootGuest({
      socketPath: sock,
      script: HELPERS + PROLOGUE + c.script + EPILOGUE,
      ip: `${GUEST_IP}/24`,
      reconnect: c.reconnect,
      kernelLog: true,
      // A soft lockup is reported after 2 x watchdog_thresh seconds (default 10).
      append: ['watchdog_thresh=3'],
      kernel,
      packed: ring === 'packed',
    });
    cleanups.push(() => g.cleanup());
    const { host, timedOut } = await watch(c, g, ns, control, t0);
    await backend.stop();
    const out = g.qemu.output;
    const faults = readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
    const r = judge(c, ring, out, { host, faults, timedOut, control, base });
    // A guest that never came up: the backend's last words say why as often as QEMU's do.
    if (r.verdict === 'error') r.reasons.push(`backend: ${backend.tail(4).split('\n').join(' | ')}`);
    return r;
  } catch (err) {
    return {
      ...base,
      verdict: 'error',
      signatures: [],
      observed: '',
      evidence: {},
      reasons: [(err as Error).message],
      faults: 0,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    for (const f of cleanups.reverse()) await f();
  }
}

/** The verdict on one cell from its console, results and fault log. */
function judge(
  c: Condition,
  ring: Ring,
  out: string,
  o: {
    host: string;
    faults: string[];
    timedOut: boolean;
    control: boolean;
    base: { row: number; ring: Ring; kernelLabel: string; kernel: string };
  },
): ConditionResult {
  const seconds = 0; // the caller times the cell
  const rep = kernelReport(out);
  const release = rep.release ?? o.base.kernel;
  const expected = outcomeFor(c, release, ring);
  const r = guestResults(out);
  const alive = r.has('vun-alive') ? r.get('vun-alive')?.rc === 0 : undefined;
  const cl = classify(out, parseCounters(r.get('vun-before')?.text), parseCounters(r.get('vun-after')?.text), alive);
  const result = (verdict: Verdict, observed: string, reasons: string[]): ConditionResult => ({
    ...o.base,
    kernel: release,
    verdict,
    signatures: cl.signatures,
    observed,
    evidence: cl.evidence,
    expected,
    reasons,
    faults: o.faults.length,
    seconds,
  });
  if (rep.missing.length) return result('error', '', [`the kernel lacks ${rep.missing.join(', ')}`]);
  if (!out.includes('VUN-READY')) {
    return result('error', '', [
      `the guest did not come up (no VUN-READY on the console): ${out.split('\n').slice(-5).join(' | ')}`,
    ]);
  }
  const reasons: string[] = [];
  if (!o.control && o.faults.length === 0) reasons.push('the plan injected nothing');
  for (const s of expected.signatures) if (!cl.signatures.includes(s)) reasons.push(`no ${s}`);
  for (const s of forbidden(expected)) if (cl.signatures.includes(s)) reasons.push(`${s}: ${cl.evidence[s]}`);
  if (expected.anyOf && !expected.anyOf.some((s) => cl.signatures.includes(s)))
    reasons.push(`none of ${expected.anyOf.join(', ')}`);
  const frames = stackFrames(out);
  const hung = cl.signatures.some((s) => s === 'soft-lockup' || s === 'hung-task');
  if (expected.frame && (hung || frames.length) && !frames.includes(expected.frame))
    reasons.push(`the stack trace's top frames are ${frames.join(' < ') || 'none'}, not in ${expected.frame}`);
  let observed = '';
  const finished = out.includes('VUN-DONE');
  if (finished && c.check) {
    try {
      observed = c.check(r, { host: o.host, faults: o.faults, console: out });
    } catch (err) {
      if (!(err instanceof Mismatch)) throw err;
      reasons.push(err.message);
    }
  } else if (!finished && !expected.hangs) {
    reasons.push(
      o.timedOut ? `the guest's script did not finish in ${TIMEOUT_MS / 1000} s` : "the guest's script did not finish",
    );
  }
  if (!observed) observed = cl.signatures.map((s) => `${s}: ${cl.evidence[s]}`).join('; ') || 'no reaction';
  else if (cl.signatures.length) observed += ` [${cl.signatures.join(', ')}]`;
  return result(reasons.length ? 'unexpected' : expected.verdict, observed, reasons);
}

/** How a kernel spec is named in results (`kernelLabel`). */
export function kernelLabel(k: KernelSpec | undefined): string {
  return !k ? DEFAULT_KERNEL_PACKAGE : 'package' in k ? k.package : k.path;
}

/**
 * The cells a run covers, in the order they start: kernels, then rings, then rows (every
 * condition whose `rings` has the ring, or the rows asked for, on every ring asked for).
 */
export function matrixCells(
  kernels: (KernelSpec | undefined)[] = [undefined],
  rings: Ring[] = ['split'],
  rows?: number[],
): { kernel: string; ring: Ring; row: number }[] {
  const unknown = (rows ?? []).filter((row) => !CONDITIONS.some((c) => c.row === row));
  if (unknown.length)
    throw new ConfigError(ErrorCode.Usage, `no condition numbered ${unknown.join(', ')} (rows 1-${CONDITIONS.length})`);
  const out: { kernel: string; ring: Ring; row: number }[] = [];
  for (const k of kernels) {
    for (const ring of rings) {
      for (const c of CONDITIONS) {
        if (rows ? rows.includes(c.row) : c.rings.includes(ring))
          out.push({ kernel: kernelLabel(k), ring, row: c.row });
      }
    }
  }
  return out;
}

/** Runs the matrix: kernels x rings x rows, `jobs` guests at once. */
export async function runConditions(o: ConditionsOptions = {}): Promise<ConditionsReport> {
  const specs = o.kernels ?? [undefined];
  const plan = matrixCells(specs, o.rings, o.rows);
  const kernels = new Map(specs.map((k) => [kernelLabel(k), resolveKernel(k)]));
  const cells = plan.map((p) => ({
    c: conditionByRow(p.row) as Condition,
    k: kernels.get(p.kernel) as GuestKernel,
    ring: p.ring,
  }));
  const results: ConditionResult[] = new Array(cells.length);
  let next = 0;
  const worker = async () => {
    while (next < cells.length) {
      const i = next++;
      const { c, k, ring } = cells[i] as (typeof cells)[number];
      o.onStart?.({ row: c.row, ring, kernel: k.label });
      const t0 = Date.now();
      const r = await runCell(c, k, ring, !!o.control);
      r.seconds = Math.round((Date.now() - t0) / 100) / 10;
      results[i] = r;
      o.onResult?.(r);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(o.jobs ?? 1, cells.length)) }, worker));
  return {
    kernels: [...kernels.values()].map((k) => ({ label: k.label, release: k.release })),
    results,
    control: !!o.control,
  };
}

/** 0 when every result is expected or a documented finding; the ones that are not, otherwise. */
export function failures(report: ConditionsReport): ConditionResult[] {
  return report.results.filter((r) => r.verdict !== 'expected' && r.verdict !== 'finding');
}
