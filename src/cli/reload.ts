/**
 * SIGHUP: the configuration (file and flags) read again while serving. What can change without
 * dropping the session is applied: the log level, receive steering (policy, key, indirection
 * table), the capture (`pcap`: a new file, other settings, on or off), the ring and message
 * traces (`trace.rings`, `trace.messages`: a new file, on or off) and the fault plan (`faults` in the file, or the file `--faults` names, read again). A change to anything else refuses the whole reload
 * with the options named (they need a restart); an invalid configuration or plan changes
 * nothing.
 */
import type { Config } from '../config/config.js';

/** Options a reload may change (config paths). */
export const RELOADABLE = ['log.level', 'faults', 'steering', 'pcap', 'trace'] as const;

/** The config paths whose values differ (top-level keys; `log.*` one level down). */
export function changedOptions(a: Config, b: Config): string[] {
  const out: string[] = [];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) {
    const va = (a as Record<string, unknown>)[k];
    const vb = (b as Record<string, unknown>)[k];
    if (k === 'log' && va && vb) {
      for (const sub of new Set([...Object.keys(va), ...Object.keys(vb)]))
        if (
          JSON.stringify((va as Record<string, unknown>)[sub]) !== JSON.stringify((vb as Record<string, unknown>)[sub])
        )
          out.push(`log.${sub}`);
      continue;
    }
    if (JSON.stringify(va) !== JSON.stringify(vb)) out.push(k);
  }
  return out;
}

export type ReloadOutcome = { kind: 'refused'; options: string[] } | { kind: 'applied'; changed: string[] };

/** Decides a reload: the changed options, refused when one of them cannot change while serving. */
export function decideReload(current: Config, next: Config, planChanged: boolean): ReloadOutcome {
  const changed = changedOptions(current, next).filter((o) => o !== 'faults');
  if (planChanged) changed.push('faults');
  const refused = changed.filter((o) => !(RELOADABLE as readonly string[]).includes(o));
  return refused.length ? { kind: 'refused', options: refused } : { kind: 'applied', changed };
}
