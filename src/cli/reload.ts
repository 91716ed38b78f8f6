/**
 * SIGHUP: the configuration (file and flags) read again while serving. What can change without
 * dropping the session is applied: the log level, receive steering (policy, key, indirection
 * table), the capture (`pcap`: a new file, other settings, on or off), the ring and message
 * traces (`trace.rings`, `trace.messages`: a new file, on or off) and the fault plan (`faults` in the file, or the file `--faults` names, read again). A change to anything else refuses the whole reload
 * with the options named (they need a restart); an invalid configuration or plan changes
 * nothing.
 */
import type { Logger } from 'pino';
import { type Config, readConfigFile, steeringOf } from '../config/config.js';
import type { Steering } from '../net/rss.js';
import type { MessageTrace } from '../trace/message-trace.js';
import type { Observers } from '../trace/observe.js';
import type { PcapWriter } from '../trace/pcapng.js';
import type { RingTrace } from '../trace/ring-trace.js';
import type { Command, ServeCommand } from './command.js';
import type { Outputs } from './outputs.js';

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

/** What a reload changes on the serving backend. */
export interface Reloadable {
  loadFaults(plan: unknown, source: string): void;
  clearFaults(): void;
  setSteering(steering: Steering): void;
  setObservers(observe: Observers): void;
  /** Returns the trace it replaces (the caller closes it). */
  setMessageTrace(trace: MessageTrace | undefined): MessageTrace | undefined;
}

/** The fault plan a serve command names: the file --faults names, read again, or the config's. */
function planOf(cmd: ServeCommand): unknown {
  return cmd.faultsFile ? readConfigFile(cmd.faultsFile) : cmd.config.faults;
}

/** SIGHUP's work: decides a reload against what is served now, and applies it or refuses it. */
export class Reloader {
  private current: { config: Config; plan: unknown };

  constructor(
    private readonly backend: Reloadable,
    private readonly outputs: Outputs,
    /** The observers every session's data plane is built with; a reload changes them here. */
    private readonly observe: Observers,
    private readonly log: Logger,
    serving: ServeCommand,
  ) {
    this.current = { config: serving.config, plan: planOf(serving) };
  }

  /** The command line read again (`parse` throws on a bad one: nothing changes then). */
  reload(parse: () => Command): void {
    try {
      const next = parse();
      if (next.action !== 'serve') return;
      const plan = planOf(next);
      const planChanged = JSON.stringify(plan) !== JSON.stringify(this.current.plan);
      const outcome = decideReload(this.current.config, next.config, planChanged);
      if (outcome.kind === 'refused') {
        this.log.error(
          { options: outcome.options },
          `reload refused, nothing changed: ${outcome.options.join(', ')} cannot change while serving (restart for that)`,
        );
        return;
      }
      this.apply(outcome.changed, next, plan, planChanged);
      this.current = { config: next.config, plan };
      this.log.info({ changed: outcome.changed }, 'configuration reloaded (SIGHUP)');
    } catch (err) {
      const e = err as { code?: string; message: string; issues?: string[] };
      this.log.error({ code: e.code, issues: e.issues }, `reload refused, nothing changed: ${e.message}`);
    }
  }

  private apply(changed: string[], next: ServeCommand, plan: unknown, planChanged: boolean): void {
    const has = (o: string) => changed.includes(o);
    const traceChanged = (k: 'rings' | 'messages') =>
      has('trace') && this.current.config.trace[k] !== next.config.trace[k];
    // What can fail comes first, so that a failure changes nothing: the new output files are
    // opened, then the plan is checked and loaded (a bad one throws before it applies).
    const opened: { close(): void }[] = [];
    const open = <T extends { close(): void } | undefined>(w: T): T => {
      if (w) opened.push(w);
      return w;
    };
    let outputs: {
      capture?: PcapWriter | undefined;
      ringTrace?: RingTrace | undefined;
      messages?: MessageTrace | undefined;
    } = {};
    try {
      outputs = {
        ...(has('pcap') ? { capture: open(this.outputs.capture(next.config)) } : {}),
        ...(traceChanged('rings') ? { ringTrace: open(this.outputs.ringTrace(next.config)) } : {}),
        ...(traceChanged('messages') ? { messages: open(this.outputs.messageTrace(next.config)) } : {}),
      };
      if (planChanged) {
        if (plan === undefined) this.backend.clearFaults();
        else this.backend.loadFaults(plan, `reload (${next.faultsFile ?? 'config file: faults'})`);
      }
    } catch (err) {
      for (const w of opened) w.close();
      throw err;
    }
    if (has('steering')) this.backend.setSteering(steeringOf(next.config));
    if (has('pcap') || traceChanged('rings')) {
      const old = { ...this.observe };
      if (has('pcap')) this.observe.capture = outputs.capture;
      if (traceChanged('rings')) this.observe.ringTrace = outputs.ringTrace;
      this.backend.setObservers({ ...this.observe });
      if (old.capture !== this.observe.capture) old.capture?.close();
      if (old.ringTrace !== this.observe.ringTrace) old.ringTrace?.close();
    }
    if (traceChanged('messages')) this.backend.setMessageTrace(outputs.messages)?.close();
    this.log.level = next.config.log.level;
  }
}
