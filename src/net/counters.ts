/**
 * Per-vring counters, written by the C++ workers into a SharedArrayBuffer and read here with
 * no native call. Slot order is native/device_config.h VUN_COUNTER_SLOTS, the one definition;
 * a test compares this list with the names the addon exports.
 */
export const COUNTER_NAMES = [
  'frames',
  'bytes',
  'dropNoBuffers',
  'dropTooBig',
  'dropHostError',
  'dropDisabled',
  'dropMalformed',
  'kicks',
  'notifySent',
  'notifySuppressed',
  'notifyCoalesced',
  'ringErrors',
  'bursts',
  'handedOver',
  // A TAP transmitq: frames written each way and the time they took, copies included
  // (native/write_chooser.h compares the two).
  'tapPlainFrames',
  'tapPlainNs',
  'tapUringFrames',
  'tapUringNs',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export const COUNTERS_PER_VRING = COUNTER_NAMES.length;
export type VringCounters = Record<CounterName, number>;

export class DeviceCounters {
  readonly array: BigUint64Array;

  constructor(readonly vrings: number) {
    this.array = new BigUint64Array(new SharedArrayBuffer(vrings * COUNTERS_PER_VRING * 8));
  }

  vring(index: number): VringCounters {
    const out = {} as VringCounters;
    COUNTER_NAMES.forEach((name, k) => {
      out[name] = Number(this.array[index * COUNTERS_PER_VRING + k]);
    });
    return out;
  }

  /** Adds `n` to a counter (the TS data path, which runs on this thread). */
  add(index: number, name: CounterName, n = 1): void {
    const i = index * COUNTERS_PER_VRING + COUNTER_NAMES.indexOf(name);
    this.array[i] = (this.array[i] ?? 0n) + BigInt(n);
  }

  all(): VringCounters[] {
    return Array.from({ length: this.vrings }, (_, i) => this.vring(i));
  }
}
