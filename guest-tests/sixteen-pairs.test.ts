/**
 * 16 queue pairs, as multi-queue hosts run them (QEMU offers up to 1024; DPDK's virtio_user
 * stops at 8): QEMU `queues=16`, the guest enables all of them (`ethtool -L eth0 combined 16`),
 * pings, and runs iperf3 with several streams each way. `/status` must show frames on several
 * receiveqs and several transmitqs. Once with a worker thread per pair, once with 4 threads
 * serving the 16 pairs (`--threads 4`).
 */
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { bootGuest } from '../src/guest/guest.js';
import { hostEnd } from '../src/guest/host-end.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Frames per vring from /status, whichever shape it nests them in. */
function framesPerVring(s: Record<string, unknown>): Map<number, number> {
  const out = new Map<number, number>();
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const x of v) {
        const r = x as { index?: number; counters?: { frames?: number }; frames?: number };
        const frames = r?.counters?.frames ?? r?.frames;
        if (typeof r?.index === 'number' && typeof frames === 'number') out.set(r.index, frames);
        else walk(x);
      }
    } else if (v && typeof v === 'object') for (const x of Object.values(v)) walk(x);
  };
  walk(s);
  return out;
}

describe.each([
  ['a worker thread per pair', []],
  ['4 worker threads for 16 pairs', ['--threads', '4']],
])('16 queue pairs with a Linux guest (%s)', (_name, extra) => {
  it('enables 16 pairs in the guest; pings and iperf3 both ways; /status shows several queues busy each way', async () => {
    const { ns, sock, backend } = await hostEnd(cleanups, {
      args: ['--queues', '16', '--steering', 'toeplitz', '--http', '127.0.0.1:9181', ...extra],
      iperf: true,
    });
    const g = bootGuest({
      socketPath: sock,
      queuePairs: 16,
      smp: 2,
      memMiB: 512,
      ip: '10.77.0.2/24',
      script: `
H=10.77.0.1
ethtool -L eth0 combined 16; res channels $? "$(ethtool -l eth0 | grep -i combined | tail -1 | tr -d '\\t ')"
ping -c 3 -W 3 $H > /tmp/p 2>&1; res ping $? "$(tail -1 /tmp/p)"
iperf3 -c $H -P 16 -t 3 -f m > /tmp/u 2>&1; res up $? "$(grep SUM /tmp/u | grep receiver | tail -1)"
iperf3 -c $H -P 16 -t 3 -f m -R > /tmp/d 2>&1; res down $? "$(grep SUM /tmp/d | grep receiver | tail -1)"
phase status
sleep 30
`,
    });
    cleanups.push(() => g.cleanup());
    await g.phase('status', 400_000);
    // The worker threads, by name (native/worker_thread.cc), while the rings run.
    const pid = backend.child.pid as number;
    const workers = spawnSync('sh', ['-c', `cat /proc/${pid}/task/*/comm | grep -c '^vun-worker-'`], {
      encoding: 'utf8',
    }).stdout.trim();
    const fetched = ns.try(
      `${process.execPath} -e "fetch('http://127.0.0.1:9181/status').then(r=>r.text()).then(t=>process.stdout.write(t))"`,
    );
    const out = g.qemu.output;
    const result = (name: string) => new RegExp(`VUN-RESULT ${name} (\\d+) ?(.*)`).exec(out);
    const ctx = `guest:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(12)}`;
    expect(result('channels')?.[1], ctx).toBe('0');
    expect(result('channels')?.[2], ctx).toMatch(/16$/);
    expect(result('ping')?.[1], ctx).toBe('0');
    expect(result('up')?.[1], ctx).toBe('0');
    expect(result('down')?.[1], ctx).toBe('0');
    expect(fetched.status, fetched.out).toBe(0);
    const frames = framesPerVring(JSON.parse(fetched.out) as Record<string, unknown>);
    const receiveqs = [...frames].filter(([v, n]) => v % 2 === 0 && n >= 100);
    const transmitqs = [...frames].filter(([v, n]) => v % 2 === 1 && n >= 100);
    console.log(
      `16 pairs (${_name}): up ${result('up')?.[2]}; down ${result('down')?.[2]}; frames per vring ${JSON.stringify([...frames])}`,
    );
    expect(frames.size, 'every vring in /status').toBe(32);
    expect(receiveqs.length, `receiveqs with traffic: ${JSON.stringify(receiveqs)}`).toBeGreaterThan(4);
    expect(transmitqs.length, `transmitqs with traffic: ${JSON.stringify(transmitqs)}`).toBeGreaterThan(4);
    expect(Number(workers), 'worker threads').toBe(extra.length ? 4 : 16);
  }, 600_000);
});
