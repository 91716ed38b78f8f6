// docs/faults.md shows this file as its example: a test of a guest driver written with the
// programmatic API. test/docs-example.test.ts checks that the two stay the same.
import { expect, it } from 'vitest';
import { type FaultLine, startBackend } from 'vhost-user-net';
import { bootGuest } from 'vhost-user-net/guest';

it('the guest driver refuses a used id out of range, and says so', async () => {
  const socket = `/tmp/vun-example-${process.pid}.sock`;
  const backend = await startBackend({
    socket,
    // What the guest sends comes back to it: traffic without a host network.
    host: 'loopback',
    faults: {
      seed: 1,
      rules: [{ name: 'bad-id', on: 'receiveq0', do: 'used-id', value: 'out-of-range', after: 1, count: 1 }],
    },
  });
  const faults: FaultLine[] = [];
  backend.on('fault', (f) => faults.push(f));
  const guest = bootGuest({
    socketPath: socket,
    ip: '10.99.0.2/24',
    // The guest's ARP requests for 10.99.0.9 come back to it: frames on its receiveq.
    script: `
ping -c 4 -W 1 10.99.0.9 >/dev/null 2>&1
res badring 0 "$(dmesg | grep -c 'input.0:id 256 out of range')"`,
  });
  try {
    const results = await guest.done(150_000);
    expect(faults).toMatchObject([{ rule: 'bad-id', do: 'used-id', vring: 0, field: 'id', new: 256 }]);
    expect(Number(results.get('badring')?.text), 'the driver logged the bad id once').toBe(1);
    expect(backend.counters()[0]?.frames).toBeGreaterThanOrEqual(2);
  } finally {
    await guest.cleanup();
    await backend.stop();
  }
}, 200_000);
