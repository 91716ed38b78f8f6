/**
 * A guest the explorer keeps between plans: one host end (namespace, TAP, backend with HTTP for
 * /faults, iperf3 servers) and one guest whose script runs rounds. A round: the guest says it is
 * ready and waits on its console; the host loads the plan and tells it to go; the guest runs the
 * workload (pings small and large, TCP both ways, small UDP) and reports its counters; the host
 * clears the plan and tells it to go on; the guest checks that traffic flows again. The console
 * between one round's `ready` and the next is that plan's evidence.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type FaultPlan, SESSION_ACTIONS } from '../faults/plan.js';
import { bootGuest, type GuestRun, guestResults, type Netns } from '../guest/guest.js';
import { type Cleanups, GUEST_IP, HOST_IP, hostEnd } from '../guest/host-end.js';
import type { GuestKernel } from '../guest/kernels.js';
import type { Proc } from '../util/proc.js';
import type { PlanRun, PlanRunner } from './types.js';
import type { Ring } from '../conditions/catalog.js';
import { faultsRequest, HANG_GRACE_MS, HTTP_PORT } from '../conditions/runner.js';
import { classify, COUNTERS_SH, HANG, KERNEL_REPORTS, parseCounters } from '../conditions/signatures.js';
import { stackFrames } from './signature.js';

/**
 * The workload, every part bounded in time (a faulted network must not hold the round). Light
 * first: pings one at a time (56, 1400 and 4000 bytes, the last fragmented), so the first
 * events of each vring are the same frames in every replay and a lie early in a plan meets a
 * quiet queue; then everything at once: a TCP stream each way (iperf3, -R from the host), small
 * UDP datagrams, and pings beside them.
 */
const WORKLOAD = `ping -c 3 -i 0.2 -W 1 ${HOST_IP} >/dev/null 2>&1
ping -c 2 -i 0.2 -s 1400 -W 1 ${HOST_IP} >/dev/null 2>&1
ping -c 1 -s 4000 -W 1 ${HOST_IP} >/dev/null 2>&1
ping -c 5 -i 0.3 -W 1 ${HOST_IP} >/dev/null 2>&1 &
timeout 7 iperf3 -c ${HOST_IP} -p 5201 -t 2 --connect-timeout 1500 >/dev/null 2>&1 &
timeout 7 iperf3 -c ${HOST_IP} -p 5202 -t 2 -R --connect-timeout 1500 >/dev/null 2>&1 &
timeout 7 iperf3 -c ${HOST_IP} -p 5203 -t 2 -u -b 20M -l 64 --connect-timeout 1500 >/dev/null 2>&1 &
wait`;

/** The guest's script: rounds until told anything but `go`. */
const ROUNDS = `${COUNTERS_SH}
round=0
while :; do
  round=$((round+1))
  echo "VUN-PHASE ready $round"
  read -r cmd || break
  [ "$cmd" = go ] || break
  res vun-before 0 "$(counters)"
${WORKLOAD}
  res vun-after 0 "$(counters)"
  echo "VUN-PHASE vun-clear $round"
  read -r cmd || break
  alive=1; for i in 1 2 3 4 5; do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 && { alive=0; break; }; done
  res vun-alive $alive
done
`;

/** How long each part of a round may take before the round is called stalled. */
const BOOT_MS = 90_000;
const PLAN_MS = 30_000;
const HEALTH_MS = 20_000;

/** A plan that did not run. */
const NOT_RUN: PlanRun = {
  signatures: [],
  evidence: {},
  frames: [],
  faults: 0,
  healthy: false,
  stalled: false,
  console: '',
  faultLog: [],
  seconds: 0,
};

/**
 * Actions whose effect outlives the plan, so the next plan would meet a guest it did not make:
 * chains never completed (withhold) or not yet published (used-burst), lies about ids and wrap
 * counters (the driver's state, even when it did not break), descriptors rewritten in guest
 * memory, and every session action (what the reconnect negotiated stays).
 */
const LASTING = new Set<string>([
  'withhold',
  'used-burst',
  'used-id',
  'used-wrap',
  'desc-rewrite',
  ...Object.keys(SESSION_ACTIONS),
]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RoundGuest {
  private readonly cleanups: Cleanups = [];
  private round = 0;
  private ns!: Netns;
  private backend!: Proc;
  private g!: GuestRun;
  private logFile = '';
  private logOffset = 0;

  private constructor(
    readonly kernel: GuestKernel,
    readonly ring: Ring,
  ) {}

  /** A fresh host end and guest; ready for `runPlan` once it resolves. */
  static async start(kernel: GuestKernel, ring: Ring): Promise<RoundGuest> {
    const rg = new RoundGuest(kernel, ring);
    try {
      await rg.boot();
      // A first round without a plan: every plan then meets a guest past its boot-time traffic
      // (IPv6 DAD and MLD reports), a reused one or a fresh one alike.
      const warm = await rg.runPlan({ seed: 0, rules: [] });
      if (!warm.healthy)
        throw new Error(
          `the guest's first round without a plan was not healthy: ${warm.notReady ?? warm.signatures.join(', ')}`,
        );
    } catch (err) {
      await rg.stop();
      throw err;
    }
    return rg;
  }

  private async boot(): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'vun-explore-'));
    this.cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    this.logFile = join(dir, 'faults.jsonl');
    writeFileSync(this.logFile, '');
    const { ns, sock, backend } = await hostEnd(this.cleanups, {
      args: [
        '--fault-log',
        this.logFile,
        '--http',
        `127.0.0.1:${HTTP_PORT}`,
        ...(this.ring === 'packed' ? ['--ring', 'packed'] : ['--ring', 'split']),
      ],
      quiet: true,
    });
    this.ns = ns;
    this.backend = backend;
    for (const port of [5201, 5202, 5203]) {
      // --idle-timeout: a server a faulted client left mid-test starts again.
      const s = ns.spawn('iperf3', [
        '-s',
        '-B',
        HOST_IP,
        '-p',
        String(port),
        '--rcv-timeout',
        '3000',
        '--idle-timeout',
        '5',
      ]);
      this.cleanups.push(() => s.stop().then(() => undefined));
    }
    this.g = bootGuest({
      socketPath: sock,
      script: ROUNDS,
      ip: `${GUEST_IP}/24`,
      reconnect: true,
      kernelLog: true,
      // A soft lockup is reported after 2 x watchdog_thresh seconds (default 10).
      append: ['watchdog_thresh=3'],
      kernel: this.kernel,
      packed: this.ring === 'packed',
      input: true,
    });
    this.cleanups.push(() => this.g.cleanup());
  }

  private until(pred: (out: string) => boolean, ms: number): Promise<'ok' | 'hang' | 'exit' | 'timeout'> {
    const end = Date.now() + ms;
    return (async () => {
      for (;;) {
        const out = this.g.qemu.output;
        if (pred(out)) return 'ok';
        if (HANG.test(out.slice(this.sliceStart(out)))) return 'hang';
        if (!this.g.qemu.running || !this.backend.running) return 'exit';
        if (Date.now() > end) return 'timeout';
        await sleep(100);
      }
    })();
  }

  private readyAt(out: string, n: number): number {
    const m = new RegExp(`VUN-PHASE ready ${n}\\r?\\n`).exec(out);
    return m ? m.index : -1;
  }

  private sliceStart(out: string): number {
    return Math.max(0, this.readyAt(out, this.round));
  }

  /**
   * Runs `plan` for one round: its windows (atMs) count from the moment it is loaded, so the
   * host adds the session's age. Resolves with what the guest did.
   */
  async runPlan(plan: FaultPlan): Promise<PlanRun> {
    const t0 = Date.now();
    const n = ++this.round;
    const ready = await this.until((out) => this.readyAt(out, n) >= 0, n === 1 ? BOOT_MS : HEALTH_MS);
    if (ready !== 'ok') return this.result(t0, { notReady: `${ready} before round ${n}: ${this.g.qemu.tail(4)}` });
    this.logOffset = readFileSync(this.logFile).length;
    const { sessionMs } = JSON.parse(await faultsRequest(this.ns, 'GET')) as { sessionMs?: number };
    await faultsRequest(this.ns, 'PUT', shiftWindows(plan, sessionMs ?? 0));
    this.g.qemu.write('go\n');
    const ran = await this.until((out) => out.includes(`VUN-PHASE vun-clear ${n}`), PLAN_MS);
    const fired = await this.injected();
    await faultsRequest(this.ns, 'DELETE').catch(() => '');
    let outcome = ran;
    if (ran === 'ok') {
      this.g.qemu.write('go\n');
      outcome = await this.until((out) => this.readyAt(out, n + 1) >= 0, HEALTH_MS);
    }
    if (outcome === 'hang') await sleep(HANG_GRACE_MS);
    return this.result(t0, {
      faults: fired.reduce((n, r) => n + r.injected, 0),
      leftState: fired.some((r) => r.injected > 0 && LASTING.has(r.do)),
      stalled: outcome === 'timeout',
      finished: outcome === 'ok',
    });
  }

  /** Faults each rule of the plan in force injected (GET /faults); empty when the backend does not answer. */
  private async injected(): Promise<{ do: string; injected: number }[]> {
    try {
      return (JSON.parse(await faultsRequest(this.ns, 'GET')) as { rules: { do: string; injected: number }[] }).rules;
    } catch {
      return [];
    }
  }

  private result(
    t0: number,
    o: { faults?: number; leftState?: boolean; stalled?: boolean; finished?: boolean; notReady?: string },
  ): PlanRun {
    const out = this.g.qemu.output;
    const start = this.sliceStart(out);
    const end = this.readyAt(out, this.round + 1);
    const slice = out.slice(start, end >= 0 ? end : undefined);
    const r = guestResults(slice);
    const alive = r.has('vun-alive') ? r.get('vun-alive')?.rc === 0 : undefined;
    const cl = classify(
      slice,
      parseCounters(r.get('vun-before')?.text),
      parseCounters(r.get('vun-after')?.text),
      alive,
    );
    let faultLog: string[] = [];
    try {
      faultLog = readFileSync(this.logFile).subarray(this.logOffset).toString().split('\n').filter(Boolean);
    } catch {
      /* the log is gone with its host end */
    }
    const healthy =
      !!o.finished &&
      !o.leftState &&
      alive === true &&
      !cl.signatures.some((s) => KERNEL_REPORTS.includes(s)) &&
      this.g.qemu.running;
    return {
      signatures: cl.signatures,
      evidence: cl.evidence,
      frames: stackFrames(slice),
      faults: Math.max(o.faults ?? 0, faultLog.length),
      healthy,
      stalled: !!o.stalled,
      ...(o.notReady ? { notReady: o.notReady } : {}),
      console: slice,
      faultLog,
      seconds: (Date.now() - t0) / 1000,
    };
  }

  async stop(): Promise<void> {
    this.g?.qemu.write('quit\n');
    for (const f of this.cleanups.splice(0).reverse()) await f();
  }
}

/** The plan as loaded `sessionMs` into a session: windows and disconnects moved by that much. */
export function shiftWindows(plan: FaultPlan, sessionMs: number): FaultPlan {
  const by = Math.ceil(sessionMs);
  return {
    ...plan,
    rules: plan.rules.map((r) => (r.atMs === undefined ? r : { ...r, atMs: r.atMs + by })),
  };
}

/**
 * Plans on a guest kept while it stays healthy: a fresh one (host end and all) after a plan
 * that left it unhealthy. A plan the guest was not ready for runs again on a fresh guest.
 */
export function guestRunner(kernel: GuestKernel, ring: Ring): PlanRunner {
  let g: RoundGuest | undefined;
  let boots = 0;
  let stopped = false;
  const fresh = async (): Promise<RoundGuest> => {
    for (let attempt = 1; ; attempt++) {
      try {
        boots++;
        return await RoundGuest.start(kernel, ring);
      } catch (err) {
        if (attempt === 3 || stopped) throw err;
      }
    }
  };
  return {
    get boots() {
      return boots;
    },
    async run(plan) {
      for (let attempt = 1; ; attempt++) {
        const guest = (g ??= await fresh());
        if (stopped) {
          // Stopped while this guest booted: it goes too.
          g = undefined;
          await guest.stop();
          return { ...NOT_RUN, notReady: 'stopped' };
        }
        const r = await guest.runPlan(plan);
        if (!r.healthy) {
          if (g === guest) g = undefined;
          await guest.stop();
        }
        if (!r.notReady || attempt === 2 || stopped) return r;
      }
    },
    async stop() {
      stopped = true;
      const guest = g;
      g = undefined;
      await guest?.stop();
    },
  };
}
