/**
 * docs/fault-conditions.md, written from the catalog (`node scripts/conditions-doc.mjs`; a test
 * fails when the file and the catalog differ).
 */
import { CONDITIONS, forbidden, type Outcome } from './catalog.js';

const esc = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function outcome(o: Outcome): string {
  const where = [o.series ? `Linux ${o.series}` : '', o.ring ? `${o.ring} rings` : ''].filter(Boolean).join(', ');
  const any = o.anyOf?.length ? `one of ${o.anyOf.map((s) => `\`${s}\``).join(' ')}` : '';
  const sig = o.signatures.length
    ? `${o.signatures.map((s) => `\`${s}\``).join(' ')}${any ? ` and ${any}` : ''}`
    : any || 'no signature';
  const not = forbidden(o)
    .map((s) => `\`${s}\``)
    .join(' ');
  return `${where ? `${where}: ` : ''}${o.verdict === 'finding' ? '**finding** ' : ''}${sig}${not ? `; never ${not}` : ''}${o.hangs ? ' (the guest hangs)' : ''}${o.frame ? ` in \`${o.frame}\`` : ''}${o.note ? ` (${esc(o.note)})` : ''}`;
}

export function conditionsMarkdown(): string {
  let md = `# Fault conditions

Generated from \`src/conditions/catalog.ts\` by \`node scripts/conditions-doc.mjs\`: do not edit.
Each row is something a device (we) can do to a Linux guest through the rings, buffers, headers,
notifications or the vhost-user session, the guard the Linux driver has against it, the plan that
does it, and the reaction a run is held to, as signatures ([faults](faults.md#signatures)).
\`vhost-user-net conditions\` runs them against any kernel; [the scorecard](fault-scorecard.md) is
the last run on Debian's 6.1 and 6.12 kernels.

A reaction is held to the first outcome that names the kernel's series and ring layout, else to
the row's default. "Never" lists the signatures that make a run unexpected even when the wanted
ones show (the severe ones always, unless the outcome lists them). A **finding** is a documented
reaction that differs from what the reference list expects of a driver. "Broken vq" means the
driver set \`vq->broken\`: that queue never moves again until the device is reset.

| # | what the device does | Linux guard | reaction (reference) | plan | rings | held to |
| --- | --- | --- | --- | --- | --- | --- |
`;
  for (const c of CONDITIONS) {
    const plan = c.midPlan
      ? `${JSON.stringify(c.plan.rules)}, then over HTTP when the guest is ready: ${JSON.stringify(c.midPlan(0).rules)} (atMs counted from then)`
      : JSON.stringify(c.plan.rules);
    const held = [...(c.outcomes ?? []).map(outcome), `otherwise: ${outcome(c.expect)}`].join('<br>');
    md += `| ${c.row} | ${esc(c.title)} | ${esc(c.guard)} | ${esc(c.reaction)} | \`${esc(plan)}\` | ${c.rings.join(', ')} | ${held} |\n`;
  }
  md += `
Rows the device cannot reach under a stock QEMU: config-space faults (MTU out of range,
max_virtqueue_pairs, RSS key size: QEMU builds the config space itself) and control-queue faults
(QEMU runs the control queue for vhost-user net).
`;
  return md;
}
