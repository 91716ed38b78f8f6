/**
 * The explorer without a guest: the plan generator (every plan valid, every action drawn,
 * a plan regenerated from its number), the minimizer against a synthetic oracle with a known
 * minimal plan, the stack-frame part of a signature, and the exploration loop over a model guest
 * (signatures found, minimized, confirmed; the output files; a run resumed from its directory).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCommandLine } from '../src/cli/command.js';
import type { Signature } from '../src/conditions/signatures.js';
import { explore, sameSignature } from '../src/explore/explorer.js';
import { ACTIONS, EXPLORE_CAPS, generatePlan } from '../src/explore/generate.js';
import { minimize, simplerRules } from '../src/explore/minimize.js';
import { shiftWindows } from '../src/explore/round-guest.js';
import { signatureKey, stackFrames } from '../src/explore/signature.js';
import type { PlanRun, PlanRunner } from '../src/explore/types.js';
import { compilePlan, type FaultPlan, type FaultRuleSpec } from '../src/faults/plan.js';
import { tempDir } from './helpers/harness.js';

describe('plan generator', () => {
  it('10,000 generated plans all validate, use every action, and come back the same from their number', () => {
    const seen = new Map<string, number>();
    const problems: string[] = [];
    let rules = 0;
    for (let i = 0; i < 10_000; i++) {
      const p = generatePlan(11, i);
      try {
        compilePlan(p, 2, `plan ${i}`);
      } catch (err) {
        problems.push(`${i}: ${JSON.stringify((err as { details?: unknown }).details)}`);
      }
      for (const r of p.rules) seen.set(r.do, (seen.get(r.do) ?? 0) + 1);
      rules += p.rules.length;
    }
    expect(problems.slice(0, 5)).toEqual([]);
    expect(ACTIONS.filter((a) => !seen.has(a))).toEqual([]);
    // Several rules per plan, on average.
    expect(rules / 10_000).toBeGreaterThan(2);
    expect(generatePlan(11, 1234)).toEqual(generatePlan(11, 1234));
    expect(generatePlan(11, 1234)).not.toEqual(generatePlan(12, 1234));
  });

  it('keeps every drawn argument inside the explorer caps and the schema (time faults, storms)', () => {
    for (let i = 0; i < 3000; i++) {
      for (const r of generatePlan(5, i).rules) {
        if (r.do === 'delay' || r.do === 'notify-delay' || r.do === 'delay-reply')
          expect(r.value as number).toBeLessThanOrEqual(EXPLORE_CAPS.delayMs);
        if (r.atMs !== undefined) expect(r.atMs).toBeLessThanOrEqual(EXPLORE_CAPS.windowMs);
        if (r.do === 'notify-drop') expect(r.atMs).toBeDefined();
        if (r.do === 'header' || r.do === 'runt') expect(r.on.startsWith('transmitq')).toBe(false);
      }
    }
  });
});

/**
 * A synthetic oracle: the guest "locks up" when some rule lies about a transmitq completion id
 * ("out-of-range") and fires at least once within the first 10 events; the known minimal plan
 * is that rule alone with no trigger but `count: 1` taken down from 7.
 */
const lockupOracle = (p: FaultPlan): boolean =>
  p.rules.some(
    (r) =>
      r.do === 'used-id' &&
      r.value === 'out-of-range' &&
      (r.on === 'transmitq0' || r.on === '*') &&
      (r.after ?? 0) < 10 &&
      (r.probability ?? 1) > 0.5,
  );

describe('minimizer', () => {
  const noisy: FaultPlan = {
    seed: 7,
    rules: [
      { name: 'a', on: 'receiveq0', do: 'drop', probability: 0.3 },
      { name: 'b', on: 'transmitq0', do: 'delay', value: 40, jitter: 5 },
      { name: 'c', on: 'receiveq0', do: 'header', field: 'gso_type', value: 3 },
      { name: 'lie', on: 'transmitq0', do: 'used-id', value: 'out-of-range', after: 6, probability: 0.9, count: 7 },
      { name: 'd', on: 'session', do: 'disconnect', atMs: 3000 },
    ],
  };

  it('finds the known minimal plan: one rule, its triggers taken away or to their boundary', async () => {
    const steps: string[] = [];
    const m = await minimize(noisy, async (p) => lockupOracle(p), {
      onStep: (_, ok, why) => steps.push(`${ok ? '+' : '-'} ${why}`),
    });
    expect(m.plan).toEqual({
      seed: 7,
      rules: [{ name: 'lie', on: 'transmitq0', do: 'used-id', value: 'out-of-range', count: 1 }],
    });
    expect(m.exhausted).toBe(false);
    // Fewer rules first, then arguments.
    expect(steps.findIndex((s) => s.includes('lie:'))).toBeGreaterThan(steps.findIndex((s) => s.includes('without')));
    expect(m.replays).toBe(steps.length);
  });

  it('keeps two rules when the reaction needs both, and stops at its replay budget with the best so far', async () => {
    const both = (p: FaultPlan) => lockupOracle(p) && p.rules.some((r) => r.do === 'disconnect');
    const m = await minimize(noisy, async (p) => both(p));
    expect(m.plan.rules.map((r) => r.name).sort()).toEqual(['d', 'lie']);
    expect(m.plan.rules.find((r) => r.name === 'd')).toEqual({ name: 'd', on: 'session', do: 'disconnect', atMs: 0 });
    const short = await minimize(noisy, async (p) => lockupOracle(p), { maxReplays: 3 });
    expect(short.exhausted).toBe(true);
    expect(short.replays).toBe(3);
    expect(lockupOracle(short.plan)).toBe(true);
  });

  it('offers simpler arguments that still validate', () => {
    const rules: FaultRuleSpec[] = [
      { name: 'x', on: 'transmitq0', do: 'used-len', value: '+900', every: 3, atMs: 100, forMs: 50 },
      { name: 'y', on: 'receiveq0', do: 'notify-storm', value: 50000, paceUs: 20 },
      { name: 'z', on: 'session', do: 'offer-mask', value: ['NET_F_MRG_RXBUF', 'NET_F_CSUM'], session: 2 },
    ];
    for (const r of rules) {
      const simpler = simplerRules(r);
      expect(simpler.length).toBeGreaterThan(1);
      for (const [c] of simpler) expect(() => compilePlan({ seed: 1, rules: [c] }, 2)).not.toThrow();
    }
    expect(simplerRules(rules[0] as FaultRuleSpec).map(([, why]) => why)).toEqual(
      expect.arrayContaining(['every 1', 'no window', 'value +0', 'value +450']),
    );
  });
});

// The 6.1 guest's report of the row-2 lockup (trimmed), as the explorer saw it.
const LOCKUP = `[   13.269197] virtio_net virtio0: output.0:id 256 out of range
[   21.152204] watchdog: BUG: soft lockup - CPU#0 stuck for 8s! [timeout:185]
[   21.153428] RIP: 0010:virtqueue_enable_cb_delayed+0x0/0x150 [virtio_ring]
[   21.155612] Call Trace:
[   21.156251]  <IRQ>
[   21.156422]  virtnet_poll+0xf7/0x4e4 [virtio_net]
[   21.156629]  ? virtqueue_get_buf_ctx_split.cold+0x18/0x42 [virtio_ring]
[   21.157028]  __napi_poll+0x2b/0x160
[   21.157124]  net_rx_action+0x2a0/0x350
[   21.157221]  handle_softirqs+0xd7/0x280
[   21.157505]  </IRQ>
[   21.157843] RIP: 0010:finish_task_switch.isra.0+0x96/0x2d0`;

describe('signatures', () => {
  it('takes the top frames of the first trace: the RIP, then callers, without guesses, plumbing or the interrupted task', () => {
    expect(stackFrames(LOCKUP)).toEqual([
      'virtqueue_enable_cb_delayed',
      'virtnet_poll',
      '__napi_poll',
      'net_rx_action',
    ]);
    expect(stackFrames('[1] virtio_net virtio0: output.0:id 256 out of range')).toEqual([]);
    expect(signatureKey(['bad-ring', 'soft-lockup'], ['a', 'b', 'c', 'd'])).toBe('soft-lockup+bad-ring @ a < b < c');
  });

  it('two lockups in different functions are two signatures; the same spin caught a frame or two apart is one', () => {
    const lock = (...frames: string[]) => ({ signatures: ['soft-lockup'] as Signature[], frames });
    // 6.1's two spins on a broken transmitq, as the explorer caught them with the RIP at different depths.
    const poll = lock('virtqueue_enable_cb_delayed', 'virtnet_poll', '__napi_poll', 'net_rx_action');
    const pollHigher = lock('virtnet_poll', '__napi_poll', 'net_rx_action');
    const xmitDeep = lock(
      'virtqueue_get_buf',
      'free_old_xmit_skbs',
      'start_xmit',
      'dev_hard_start_xmit',
      'sch_direct_xmit',
    );
    const xmitHigh = lock(
      'start_xmit',
      'dev_hard_start_xmit',
      'sch_direct_xmit',
      '__dev_queue_xmit',
      'ip_finish_output2',
    );
    expect(sameSignature(poll, pollHigher)).toBe(true);
    expect(sameSignature(xmitDeep, xmitHigh)).toBe(true);
    expect(sameSignature(poll, xmitDeep)).toBe(false);
    // Another function under the same generic callers is another place.
    expect(
      sameSignature(xmitHigh, lock('netif_receive_skb', 'dev_hard_start_xmit', 'sch_direct_xmit', 'foo', 'bar')),
    ).toBe(false);
    expect(sameSignature(poll, { ...poll, signatures: ['soft-lockup', 'bad-ring'] })).toBe(false);
  });

  it('moves windows and disconnects by the session age when a plan is loaded mid-session', () => {
    const p: FaultPlan = {
      seed: 1,
      rules: [
        { name: 'w', on: '*', do: 'notify-drop', atMs: 100, forMs: 50 },
        { name: 'd', on: 'session', do: 'disconnect', atMs: 0 },
        { name: 'x', on: '*', do: 'drop' },
      ],
    };
    expect(shiftWindows(p, 5000.2).rules.map((r) => r.atMs)).toEqual([5101, 5001, undefined]);
  });
});

/**
 * A model guest: plans are "run" by a rule table (a transmitq id lie breaks the ring and locks it up, with frames;
 * a csum_start header lie makes checksum errors; anything else nothing), each run taking no time.
 */
function modelRunner(log: FaultPlan[]): () => PlanRunner {
  return () => {
    let boots = 0;
    return {
      get boots() {
        return boots;
      },
      async run(plan: FaultPlan): Promise<PlanRun> {
        log.push(plan);
        const lock = plan.rules.some(
          (r) => r.do === 'used-id' && !r.on.startsWith('receiveq') && (r.probability ?? 1) > 0.05,
        );
        const csum = plan.rules.some((r) => r.do === 'header' && r.field === 'csum_start');
        const signatures: Signature[] = [
          ...(lock ? (['soft-lockup', 'bad-ring'] as const) : []),
          ...(csum ? (['csum-error'] as const) : []),
        ];
        if (lock) boots++;
        return {
          signatures,
          evidence: Object.fromEntries(signatures.map((s) => [s, `model ${s}`])),
          frames: lock ? ['virtqueue_enable_cb_delayed', 'virtnet_poll', '__napi_poll', 'net_rx_action'] : [],
          faults: signatures.length,
          healthy: !lock,
          stalled: false,
          console: lock ? LOCKUP : '',
          faultLog: [],
          seconds: 0,
        };
      },
      async stop() {},
    };
  };
}

describe('exploration loop (model guest)', () => {
  const kernel = { label: 'model', vmlinuz: '/dev/null', release: '6.1.0-model' };

  it('finds, minimizes and confirms signatures, writes the outputs, and resumes from its directory', async () => {
    const tmp = tempDir('vun-explore-');
    const out = tmp.dir;
    const ran: FaultPlan[] = [];
    const st = await explore({
      kernel,
      ring: 'split',
      minutes: 10,
      maxPlans: 60,
      seed: 11,
      out,
      runner: modelRunner(ran),
    });
    expect(st.plansRun).toBe(60);
    const lock = st.found.find((f) => f.signatures.join() === 'soft-lockup,bad-ring');
    expect(lock).toBeDefined();
    expect(lock?.status).toBe('minimized');
    expect(lock?.plan.rules).toHaveLength(1);
    expect(lock?.plan.rules[0]?.do).toBe('used-id');
    expect(lock?.replayed).toBe(3);
    expect(lock?.reference).toEqual(expect.arrayContaining([2]));
    // Every later plan that locked up the model was the same signature, counted, not minimized again.
    expect(st.found.filter((f) => f.signatures.join() === 'soft-lockup,bad-ring')).toHaveLength(1);
    const doc = JSON.parse(readFileSync(join(out, 'signatures.json'), 'utf8'));
    expect(doc.plansRun).toBe(st.plansRun);
    expect(doc.kernel.release).toBe('6.1.0-model');
    for (const f of doc.signatures) expect(existsSync(join(out, f.files.plan))).toBe(true);
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toMatch(/^# Exploration: model/);
    expect(readFileSync(join(out, 'plans.jsonl'), 'utf8').trim().split('\n')).toHaveLength(st.plansRun);
    // Resumed: the next plan number goes on, the minutes are the whole run's.
    const again = await explore({
      kernel,
      ring: 'split',
      minutes: 10,
      maxPlans: 80,
      seed: 11,
      out,
      runner: modelRunner(ran),
    });
    expect(again.plansRun).toBe(80);
    expect(again.nextIndex).toBe(80);
    expect(again.found.filter((f) => f.signatures.join() === 'soft-lockup,bad-ring')).toHaveLength(1);
    await expect(
      explore({ kernel, ring: 'split', minutes: 1, seed: 12, out, runner: modelRunner(ran) }),
    ).rejects.toThrow(/another seed/);
    tmp.cleanup();
  });
});

describe('command line', () => {
  it('parses explore and refuses what it cannot run', () => {
    expect(
      parseCommandLine([
        'explore',
        '--kernel-package',
        'linux-image-cloud-amd64',
        '--minutes',
        '15',
        '--seed',
        '11',
        '--out',
        '/tmp/x',
      ]),
    ).toMatchObject({
      action: 'explore',
      kernel: { package: 'linux-image-cloud-amd64' },
      minutes: 15,
      seed: 11,
      jobs: 1,
      ring: 'split',
      out: '/tmp/x',
    });
    expect(() => parseCommandLine(['explore', '--minutes', '5'])).toThrow(/--out DIR/);
    expect(() => parseCommandLine(['explore', '--out', 'd', '--ring', 'ring'])).toThrow(/--ring takes split or packed/);
    expect(() => parseCommandLine(['explore', '--out', 'd', '--kernel', 'a', '--kernel-package', 'b'])).toThrow(
      /not both/,
    );
    expect(parseCommandLine(['explore', '--replay', 'p.json'])).toMatchObject({ replay: 'p.json', times: 3 });
  });
});
