/**
 * Interrupt coalescing as configured (native/coalesce.h does it, per vring, in the C++ data
 * plane): `adaptive` sends an interrupt at once when the last one on that vring is `usecs` old
 * and holds it until then otherwise; `static` holds each one up to `usecs`; both send early
 * once `frames` used entries wait (0: no limit); `off` sends each one the ring asks for.
 */
export interface CoalesceConfig {
  mode: 'off' | 'static' | 'adaptive';
  usecs: number;
  frames: number;
}

/** The defaults (docs/benchmarks.md §12 measured them). */
export const COALESCE_DEFAULTS: CoalesceConfig = { mode: 'adaptive', usecs: 50, frames: 64 };

/** The addon's mode numbers (native/coalesce.h CoalesceMode). */
export const COALESCE_MODES: readonly CoalesceConfig['mode'][] = ['off', 'static', 'adaptive'];
