/**
 * The conditions matrix written out: JSON (the documented shape), Markdown (a table per kernel
 * and ring), JUnit XML (for CI systems), and the terminal's lines.
 */
import { conditionByRow } from './catalog.js';
import type { ConditionResult, ConditionsReport } from './runner.js';

/** The JSON docs/faults.md documents: kernels, then one result per cell. */
export function toJson(report: ConditionsReport): string {
  return `${JSON.stringify(
    {
      kernels: report.kernels,
      control: report.control,
      results: report.results.map((r) => ({
        row: r.row,
        ring: r.ring,
        kernel: r.kernel,
        kernelLabel: r.kernelLabel,
        verdict: r.verdict,
        signatures: r.signatures,
        observed: r.observed,
        evidence: r.evidence,
        expected: { verdict: r.expected.verdict, signatures: r.expected.signatures, note: r.expected.note },
        reasons: r.reasons,
        faults: r.faults,
        seconds: r.seconds,
      })),
    },
    null,
    2,
  )}\n`;
}

const esc = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** One row per condition, one column per kernel and ring: verdict and signatures. */
export function toMarkdown(report: ConditionsReport): string {
  const cols = [...new Set(report.results.map((r) => `${r.kernel} ${r.ring}`))];
  const rows = [...new Set(report.results.map((r) => r.row))].sort((a, b) => a - b);
  const cell = (row: number, col: string) => {
    const r = report.results.find((x) => x.row === row && `${x.kernel} ${x.ring}` === col);
    if (!r) return '-';
    const sig = r.signatures.length ? r.signatures.join(', ') : 'none';
    return `**${r.verdict}**: ${sig}`;
  };
  let md = `| row | condition | ${cols.join(' | ')} |\n| --- | --- |${cols.map(() => ' --- |').join('')}\n`;
  for (const row of rows) {
    md += `| ${row} | ${esc(conditionByRow(row)?.title ?? '')} | ${cols.map((c) => cell(row, c)).join(' | ')} |\n`;
  }
  const odd = report.results.filter((r) => r.verdict !== 'expected');
  if (odd.length) {
    md += '\n';
    for (const r of odd) {
      const why = r.verdict === 'finding' ? (r.expected.note ?? '') : r.reasons.join('; ');
      md += `- row ${r.row}, ${r.kernel} ${r.ring}: ${r.verdict}: ${esc(why)}\n`;
    }
  }
  return md;
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** JUnit XML: a test suite per kernel and ring, a test case per row; unexpected = failure. */
export function toJunit(report: ConditionsReport): string {
  const groups = new Map<string, ConditionResult[]>();
  for (const r of report.results) {
    const k = `${r.kernel} ${r.ring}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  let out = '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="vhost-user-net conditions">\n';
  for (const [name, rs] of groups) {
    const failed = rs.filter((r) => r.verdict === 'unexpected').length;
    const errors = rs.filter((r) => r.verdict === 'error').length;
    const time = rs.reduce((s, r) => s + r.seconds, 0);
    out += `  <testsuite name="${xml(name)}" tests="${rs.length}" failures="${failed}" errors="${errors}" time="${time.toFixed(1)}">\n`;
    for (const r of rs) {
      const title = conditionByRow(r.row)?.title ?? '';
      out += `    <testcase classname="${xml(name)}" name="row ${r.row}: ${xml(title)}" time="${r.seconds}">`;
      const text = `signatures: ${r.signatures.join(', ') || 'none'}; observed: ${r.observed}`;
      if (r.verdict === 'unexpected') out += `<failure message="${xml(r.reasons.join('; '))}">${xml(text)}</failure>`;
      else if (r.verdict === 'error') out += `<error message="${xml(r.reasons.join('; '))}">${xml(text)}</error>`;
      else out += `<system-out>${xml(`${r.verdict}: ${text}`)}</system-out>`;
      out += '</testcase>\n';
    }
    out += '  </testsuite>\n';
  }
  return `${out}</testsuites>\n`;
}

/** One line per finished cell, for a terminal. */
export function resultLine(r: ConditionResult): string {
  const sig = r.signatures.length ? r.signatures.join(',') : 'no signature';
  const why = r.verdict === 'unexpected' || r.verdict === 'error' ? `  (${r.reasons.join('; ')})` : '';
  return `row ${String(r.row).padStart(2)} ${r.ring.padEnd(6)} ${r.kernel.padEnd(28)} ${r.verdict.padEnd(10)} ${sig}  ${r.seconds}s${why}`;
}
