/**
 * AF_PACKET fanout across queue pairs (`af-packet:IFACE,fanout=MODE`): one socket per pair,
 * joined in one PACKET_FANOUT group, so the kernel picks which pair reads each frame. With
 * `--steering none` the frame goes to that pair's receiveq, so the guest's receiveqs show the
 * kernel's choice: with `fanout=hash` one TCP flow stays on one receiveq, with `fanout=lb` (round
 * robin) the same flow is spread over all of them. 4 pairs, a Linux guest, iperf3 from the host.
 */
import { loggedFrames } from '../test/helpers/backend-log.js';
import { afterEach, describe, expect, it } from 'vitest';
import { bootGuest } from '../src/guest/guest.js';
import { hostEnd } from '../src/guest/host-end.js';
import { waitFor } from '../src/util/wait.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.each(['hash', 'lb'] as const)('AF_PACKET fanout=%s over 4 pairs', (mode) => {
  it('the kernel spreads the host frames over the pairs as the mode says', async () => {
    const { sock, backend } = await hostEnd(cleanups, {
      kind: 'af-packet',
      fanout: mode,
      args: ['--queues', '4', '--steering', 'none'],
      iperf: true,
      quiet: true,
    });
    const g = bootGuest({
      socketPath: sock,
      queuePairs: 4,
      smp: 2,
      ip: '10.77.0.2/24',
      script: `
H=10.77.0.1
ethtool -L eth0 combined 4; res channels $? "$(ethtool -l eth0 | grep -i combined | tail -1 | tr -d '\\t ')"
ping -c 2 -W 3 $H > /tmp/p 2>&1; res ping $? "$(tail -1 /tmp/p)"
iperf3 -c $H -P 1 -t 3 -f m -R > /tmp/one 2>&1; res one $? "$(grep receiver /tmp/one | tail -1)"
`,
    });
    cleanups.push(() => g.cleanup());
    const r = await g.done(300_000);
    await g.qemu.stop();
    await waitFor(() => backend.output.includes('"msg":"vring counters"'), 10_000, 'backend counters').catch(() => {});
    const ctx = `guest:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(12)}`;
    expect(r.get('channels')?.rc, ctx).toBe(0);
    expect(r.get('ping')?.rc, ctx).toBe(0);
    expect(r.get('one')?.rc, ctx).toBe(0);
    const receiveqs = loggedFrames(backend.output, 4).receiveq;
    const total = receiveqs.reduce((a, b) => a + b, 0);
    console.log(`fanout=${mode}: one TCP flow host -> guest (${r.get('one')?.text}); frames per receiveq ${receiveqs}`);
    expect(total, ctx).toBeGreaterThan(1000);
    if (mode === 'hash') {
      // One flow, one hash, one socket: nearly all on one receiveq (pings and ARP aside).
      expect(Math.max(...receiveqs) / total, `${receiveqs}`).toBeGreaterThan(0.9);
    } else {
      // Round robin: every socket takes its turn, so every receiveq carries about a quarter.
      expect(Math.max(...receiveqs) / total, `${receiveqs}`).toBeLessThan(0.5);
      expect(receiveqs.filter((n) => n > total / 8).length, `${receiveqs}`).toBe(4);
    }
  }, 400_000);
});
