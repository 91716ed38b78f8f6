/**
 * 4 queue pairs: the guest enables them (ethtool -L eth0 combined 4) and runs several iperf3
 * flows each way. Both the guest's per-queue counters (ethtool -S) and ours must show traffic
 * on more than one queue in each direction, and one flow must stay on one receiveq.
 */
import { loggedFrames } from '../test/helpers/backend-log.js';
import { afterEach, describe, expect, it } from 'vitest';
import { bootGuest } from '../src/guest/guest.js';
import { waitFor } from '../test/helpers/harness.js';
import { hostEnd } from '../src/guest/host-end.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** "rx_queue_0_packets:12 tx_queue_0_packets:5 ..." -> {rx: [12, ...], tx: [5, ...]} */
function queues(text: string): { rx: number[]; tx: number[] } {
  const out = { rx: [] as number[], tx: [] as number[] };
  for (const m of text.matchAll(/(rx|tx)_queue_(\d+)_packets:(\d+)/g))
    out[m[1] as 'rx' | 'tx'][Number(m[2])] = Number(m[3]);
  return out;
}
const delta = (a: number[], b: number[]) => b.map((x, i) => x - (a[i] ?? 0));
const busy = (xs: number[], min: number) => xs.filter((x) => x >= min).length;

describe('4 queue pairs with a Linux guest', () => {
  it('spreads flows over several queues both ways; one flow stays on one receiveq', async () => {
    const { sock, backend } = await hostEnd(cleanups, {
      args: ['--queues', '4', '--steering', 'toeplitz'],
      iperf: true,
    });
    const g = bootGuest({
      socketPath: sock,
      queuePairs: 4,
      smp: 2,
      ip: '10.77.0.2/24',
      script: `
H=10.77.0.1
snap() { ethtool -S eth0 | grep -E '(rx|tx)_queue_[0-9]+_packets' | tr -d ' ' | tr '\\n' ' '; }
ethtool -L eth0 combined 4; res channels $? "$(ethtool -l eth0 | grep -i combined | tail -1 | tr -d '\\t ')"
ping -c 2 -W 3 $H >/dev/null 2>&1
res s0 0 "$(snap)"
iperf3 -c $H -P 8 -t 3 -f m > /tmp/u 2>&1; res up $? "$(grep SUM /tmp/u | grep receiver | tail -1)"
iperf3 -c $H -P 8 -t 3 -f m -R > /tmp/d 2>&1; res down $? "$(grep SUM /tmp/d | grep receiver | tail -1)"
res s1 0 "$(snap)"
iperf3 -c $H -P 1 -t 2 -f m -R > /tmp/one 2>&1; res one $? "$(grep receiver /tmp/one | tail -1)"
res s2 0 "$(snap)"
`,
    });
    cleanups.push(() => g.cleanup());
    const r = await g.done(400_000);
    await g.qemu.stop();
    await waitFor(() => backend.output.includes('"msg":"vring counters"'), 10_000, 'backend counters').catch(() => {});
    const ctx = `guest:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(12)}`;
    expect(r.get('channels')?.rc, ctx).toBe(0);
    expect(r.get('up')?.rc, ctx).toBe(0);
    expect(r.get('down')?.rc, ctx).toBe(0);
    const s0 = queues(r.get('s0')?.text ?? '');
    const s1 = queues(r.get('s1')?.text ?? '');
    const s2 = queues(r.get('s2')?.text ?? '');
    const many = { rx: delta(s0.rx, s1.rx), tx: delta(s0.tx, s1.tx) };
    const one = { rx: delta(s1.rx, s2.rx), tx: delta(s1.tx, s2.tx) };
    // Our side: frames per vring from the session's counters (logged when QEMU went away).
    const logged = loggedFrames(backend.output, 4);
    const ours = { rx: logged.receiveq, tx: logged.transmitq };
    console.log(
      `guest result: ${JSON.stringify({ up: r.get('up')?.text, down: r.get('down')?.text, guestQueuesManyFlows: many, guestQueuesOneFlow: one, ours })}`,
    );
    expect(s0.rx.length, 'the guest has 4 receive queues').toBe(4);
    expect(busy(many.rx, 100), `guest rx queues busy: ${many.rx}`).toBeGreaterThan(1);
    expect(busy(many.tx, 100), `guest tx queues busy: ${many.tx}`).toBeGreaterThan(1);
    expect(busy(ours.rx, 100), `our receiveqs busy: ${ours.rx}`).toBeGreaterThan(1);
    expect(busy(ours.tx, 100), `our transmitqs busy: ${ours.tx}`).toBeGreaterThan(1);
    // One TCP flow host -> guest: its data lands on one receiveq (a few stray frames aside).
    const total = one.rx.reduce((a, b) => a + b, 0);
    expect(Math.max(...one.rx), `one flow's rx per queue: ${one.rx}`).toBeGreaterThan(0.9 * total);
  }, 600_000);
});
