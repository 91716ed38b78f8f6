/**
 * The explorer's report (OUT/report.md) and how a found signature relates to the reference
 * list: the catalog rows whose reaction, on this kernel series and ring, has the signature's
 * kernel reports and whose plan uses one of the minimized plan's actions.
 */
import { CONDITIONS, outcomeFor, type Ring } from '../conditions/catalog.js';
import { KERNEL_REPORTS, type Signature } from '../conditions/signatures.js';
import type { FaultPlan } from '../faults/plan.js';
import type { ExploreState, Found } from './types.js';

/** Catalog rows with the same kernel reports (or, without any, the same oracles) from one of the plan's actions. */
export function referenceRows(signatures: Signature[], plan: FaultPlan, release: string, ring: Ring): number[] {
  const reports = signatures.filter((s) => KERNEL_REPORTS.includes(s));
  const wanted = reports.length ? reports : signatures;
  const actions = new Set(plan.rules.map((r) => r.do));
  return CONDITIONS.filter((c) => {
    const o = outcomeFor(c, release, ring);
    const theirs = o.signatures.filter((s) => (reports.length ? KERNEL_REPORTS.includes(s) : true));
    return (
      theirs.length === wanted.length &&
      wanted.every((s) => theirs.includes(s)) &&
      c.plan.rules.some((r) => actions.has(r.do))
    );
  }).map((c) => c.row);
}

const rule = (r: FaultPlan['rules'][number]): string => {
  const { name: _name, ...rest } = r;
  return `\`${JSON.stringify(rest)}\``;
};

function row(f: Found): string {
  const plan = f.plan.rules.map(rule).join('<br>');
  const status =
    f.status === 'minimized' || f.status === 'not-minimized'
      ? `${f.original.plan.rules.length} -> ${f.plan.rules.length} rules${f.status === 'not-minimized' ? ' (budget spent)' : ''}, replayed ${f.replayed}/3`
      : f.status === 'not-reproduced'
        ? `not reproduced (replays showed ${f.replaysShowed?.join('; ') || '-'})`
        : f.status;
  return `| ${f.id} | ${f.signatures.join(', ')} | ${f.frames.join(' < ') || '-'} | ${f.firstSeenAt} | ${f.seen} | ${status} | ${plan} | ${f.reference.length ? f.reference.join(', ') : 'new'} |`;
}

export function explorerReport(st: ExploreState): string {
  const minutes = st.elapsedMs / 60_000;
  const lines = [
    `# Exploration: ${st.kernel.label} (${st.kernel.release}), ${st.ring} rings, seed ${st.seed}`,
    '',
    `${st.plansRun} plans in ${minutes.toFixed(1)} minutes (${(st.plansRun / Math.max(minutes, 1e-9)).toFixed(1)} a minute), ` +
      `${st.replays} replays, ${st.reboots} guest boots, ${st.stalls} plans stalled (the round did not finish and no hang showed). ` +
      `${st.found.length} signatures.`,
    '',
    '| # | oracles | top frames | first seen (min) | plans that showed it | minimized | plan (minimized) | reference rows |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...st.found.map(row),
    '',
    'Each signature has a folder `sig-N/`: `plan.json` (minimized), `original.json`, and the console',
    'and fault log of the plan that first showed it. Replay one with',
    '`vhost-user-net explore --replay sig-N/plan.json` (windows count from when the plan is loaded).',
    '',
  ];
  for (const f of st.found) {
    lines.push(`## #${f.id}: ${f.key}`, '');
    for (const s of f.signatures) lines.push(`- ${s}: ${f.evidence[s] ?? ''}`);
    lines.push('', `Original plan (number ${f.original.index}): ${f.original.plan.rules.map(rule).join(', ')}`, '');
  }
  return `${lines.join('\n')}\n`;
}
