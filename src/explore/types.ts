/** What the explorer's parts pass each other: one plan's outcome, and what runs plans. */
import type { Signature } from '../conditions/signatures.js';
import type { FaultPlan } from '../faults/plan.js';
import type { Ring } from '../conditions/catalog.js';

export interface PlanRun {
  signatures: Signature[];
  evidence: Partial<Record<Signature, string>>;
  /** The top frames of the first kernel stack trace the plan caused (empty: none). */
  frames: string[];
  /** Faults the plan injected. */
  faults: number;
  /** The guest can take the next plan (no hang, traffic flows again, no kernel report). */
  healthy: boolean;
  /** The round did not finish in time (and no hang showed): the guest or QEMU stopped answering. */
  stalled: boolean;
  /** The guest never became ready (boot failed, or the previous plan left it unable). */
  notReady?: string;
  console: string;
  /** Fault log lines the plan wrote. */
  faultLog: string[];
  seconds: number;
}

/** What runs a plan: a guest (round-guest.ts guestRunner), or a model in tests. */
export interface PlanRunner {
  run(plan: FaultPlan): Promise<PlanRun>;
  /** Guests booted so far. */
  readonly boots: number;
  stop(): Promise<void>;
}

export interface Found {
  id: number;
  key: string;
  signatures: Signature[];
  frames: string[];
  evidence: Partial<Record<Signature, string>>;
  /** The plan as generated, with its number. */
  original: { index: number; plan: FaultPlan };
  /** The minimized plan (the original until minimization ends). */
  plan: FaultPlan;
  status: 'pending' | 'minimizing' | 'minimized' | 'not-reproduced' | 'not-minimized';
  /** not-reproduced: the signatures its replays showed instead. */
  replaysShowed?: string[];
  /** Replays spent minimizing. */
  minimizeReplays: number;
  /** Of CONFIRMATIONS replays of `plan`, how many showed the signature. */
  replayed: number;
  /** Minutes into the run when it was first seen. */
  firstSeenAt: number;
  /** Plans that showed it (exploration only). */
  seen: number;
  /** Reference conditions that name the same reaction (catalog rows). */
  reference: number[];
}

export interface ExploreState {
  version: 1;
  seed: number;
  ring: Ring;
  kernel: { label: string; release: string };
  minutes: number;
  /** The next plan number to generate; `inFlight` were started and not finished. */
  nextIndex: number;
  inFlight: number[];
  plansRun: number;
  replays: number;
  reboots: number;
  stalls: number;
  /** Ms spent in this run over every start. */
  elapsedMs: number;
  found: Found[];
}
