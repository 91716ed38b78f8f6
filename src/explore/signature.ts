/**
 * What the explorer calls one finding: a signature, the set of oracles that fired
 * (conditions/signatures.ts) plus, when the kernel printed a stack trace, its top frames (two
 * lockups in different functions are two signatures). Frames are function names without
 * offsets, the first trace's, from the interrupted instruction (RIP) down through the callers,
 * leaving out the entry code every trace passes through and the frames the unwinder was unsure
 * of ("? name").
 */
import { SIGNATURES, type Signature } from '../conditions/signatures.js';

export { stackFrames } from '../conditions/signatures.js';

/** How many frames a signature's key shows (it keeps TOP_FRAMES, conditions/signatures.ts). */
export const KEY_FRAMES = 3;

/** The oracles in vocabulary order, plus the frames, as one string (equal strings: one signature). */
export function signatureKey(signatures: readonly Signature[], frames: readonly string[]): string {
  const set = SIGNATURES.filter((s) => signatures.includes(s)).join('+') || 'none';
  return frames.length ? `${set} @ ${frames.slice(0, KEY_FRAMES).join(' < ')}` : set;
}

/** Severity rank of a signature set (lower: worse): its worst oracle's place in the vocabulary. */
export function severity(signatures: readonly Signature[]): number {
  const ranks = signatures.map((s) => SIGNATURES.indexOf(s));
  return ranks.length ? Math.min(...ranks) : SIGNATURES.length;
}

/**
 * Two top-frame lists tell of the same place: both empty, or three frames in common (all of
 * the shorter one's, when it has fewer). A spin caught with its RIP one or two calls deeper is
 * one place; two places under the same generic callers are not.
 */
export function sharesFrames(a: readonly string[], b: readonly string[]): boolean {
  if (!a.length || !b.length) return a.length === b.length;
  const common = a.filter((f) => b.includes(f)).length;
  return common >= Math.min(3, a.length, b.length);
}

/** The same signature: the same oracles, and traces of the same place (sharesFrames). */
export function sameSignature(a: Sig, b: Sig): boolean {
  if (a.signatures.length !== b.signatures.length || !a.signatures.every((s) => b.signatures.includes(s))) return false;
  return sharesFrames(a.frames, b.frames);
}

/**
 * Whether a replay shows the signature being minimized: every oracle of it fired again, and
 * when it has a trace, the replay's is of the same place.
 */
export function shows(target: Sig, run: Sig): boolean {
  if (!target.signatures.every((s) => run.signatures.includes(s))) return false;
  return target.frames.length === 0 || sharesFrames(target.frames, run.frames);
}

type Sig = { signatures: readonly Signature[]; frames: readonly string[] };
