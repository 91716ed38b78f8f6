/**
 * Which data plane a backend builds for each session, from the user's choices: the C++ one
 * (the default) or the TS reference. The CLI and the programmatic API both build it here.
 */
import type { OpenHostBackend } from '../host/host-backend.js';
import type { Observers } from '../trace/observe.js';
import type { DataPlaneFactory } from './data-plane.js';
import type { CoalesceConfig } from './coalesce.js';
import { NativeDataPlane } from './native-data-plane.js';
import type { Steering } from './rss.js';
import { TsDataPlane } from './ts-data-plane.js';

export interface DataPlaneChoice {
  datapath: 'native' | 'ts';
  queuePairs: number;
  host: OpenHostBackend;
  steering?: Steering;
  observe?: Observers;
  /** C++ only: CPU pinning, pairs per thread, busy-poll, interrupt coalescing. */
  cpus?: number[];
  threadOf?: number[];
  pollUs?: number;
  coalesce?: CoalesceConfig;
}

export function dataPlaneFactory(c: DataPlaneChoice): DataPlaneFactory {
  const common = { queuePairs: c.queuePairs, host: c.host, steering: c.steering, observe: c.observe ?? {} };
  return (native, log, events) =>
    c.datapath === 'ts'
      ? new TsDataPlane(native, common, log, events)
      : new NativeDataPlane(
          native,
          { ...common, cpus: c.cpus, threadOf: c.threadOf, pollUs: c.pollUs, coalesce: c.coalesce },
          log,
          events,
        );
}
