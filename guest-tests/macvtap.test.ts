/**
 * The macvtap host backend with a real Linux guest: in a namespace this test creates, a veth
 * pair whose one end (vunP) is the macvtap's parent and whose other end has the host address.
 * The backend creates the macvtap (bridge mode, the guest's MAC), serves it through its
 * /dev/tapN, and the guest pings the other end and runs iperf3 both ways (offloads through the
 * vnet header). When the backend stops, the macvtap it created is gone.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bootGuest, mbits, Netns, requireRoot, startBackend } from '../src/guest/guest.js';
import { tempDir, waitFor } from '../test/helpers/harness.js';
import type { Proc } from '../src/util/proc.js';

const HOST_IP = '10.79.0.1';
const GUEST_IP = '10.79.0.2';
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('macvtap host backend', () => {
  it.each([1, 2])(
    'a guest pings and moves TCP through a macvtap on a veth (%i queue pairs)',
    async (pairs) => {
      requireRoot('the macvtap test');
      const ns = new Netns();
      cleanups.push(() => ns.delete());
      const tmp = tempDir();
      cleanups.push(tmp.cleanup);
      ns.sh(`ip link add vunP type veth peer name vunH && ip link set vunP up && ip link set vunH up`);
      ns.sh(`ip addr add ${HOST_IP}/24 dev vunH`);
      const iperf = ns.spawn('iperf3', ['-s', '-B', HOST_IP]);
      cleanups.push(() => iperf.stop());
      const sock = join(tmp.dir, 'vhost.sock');
      const backend = startBackend(ns, sock, [
        '--backend',
        'macvtap:vunP,mode=bridge,mac=52:54:00:12:34:56,name=vunMV',
        '--queues',
        String(pairs),
      ]);
      cleanups.push(() => backend.stop());
      await waitFor(() => existsSync(sock) || !backend.running, 15_000, 'the backend socket');
      expect(backend.running, backend.tail(20)).toBe(true);
      expect(ns.sh('ip -d link show vunMV'), 'the macvtap the backend made').toMatch(/macvtap mode bridge/);
      const { g } = await pingAndTcp(sock, backend, `macvtap/${pairs}`, 3, pairs);
      // The backend removes the macvtap it created when it stops.
      await g.cleanup();
      await backend.stop();
      expect(ns.try('ip link show vunMV').status).not.toBe(0);
    },
    240_000,
  );
});

describe('macvtap modes', () => {
  // vepa and private send everything to the "switch" (here the veth's other end), which is where
  // the host address is, so the guest reaches it in every mode; passthru gives the parent to the
  // one macvtap (no mac= needed: the parent takes whatever the guest sends and receives).
  it.each([
    ['vepa', ',mac=52:54:00:12:34:56'],
    ['private', ',mac=52:54:00:12:34:56'],
    ['passthru', ''],
  ])(
    'mode=%s: the macvtap is made in that mode and the guest pings and moves TCP both ways',
    async (mode, mac) => {
      requireRoot('the macvtap test');
      const ns = new Netns();
      cleanups.push(() => ns.delete());
      const tmp = tempDir();
      cleanups.push(tmp.cleanup);
      ns.sh(`ip link add vunP type veth peer name vunH && ip link set vunP up && ip link set vunH up`);
      ns.sh(`ip addr add ${HOST_IP}/24 dev vunH`);
      const iperf = ns.spawn('iperf3', ['-s', '-B', HOST_IP]);
      cleanups.push(() => iperf.stop());
      const sock = join(tmp.dir, 'vhost.sock');
      const backend = startBackend(ns, sock, ['--backend', `macvtap:vunP,mode=${mode}${mac},name=vunMV`]);
      cleanups.push(() => backend.stop());
      await waitFor(() => existsSync(sock) || !backend.running, 15_000, 'the backend socket');
      expect(backend.running, backend.tail(20)).toBe(true);
      expect(ns.sh('ip -d link show vunMV'), 'the macvtap the backend made').toMatch(
        new RegExp(`macvtap mode ${mode}`),
      );
      await pingAndTcp(sock, backend, `macvtap/${mode}`, 2);
    },
    240_000,
  );
});

/**
 * Boots a guest on `sock`: it pings the host and moves TCP each way for `seconds` (iperf3);
 * each must succeed, and some TCP must move. The guest is the caller's to clean up (registered).
 */
async function pingAndTcp(sock: string, backend: Proc, label: string, seconds: number, pairs = 1) {
  const g = bootGuest({
    socketPath: sock,
    ip: `${GUEST_IP}/24`,
    ...(pairs > 1 ? { queuePairs: pairs, smp: pairs } : {}),
    script: `
ping -c 3 -W 3 ${HOST_IP} > /tmp/p 2>&1; res ping $? "$(tail -2 /tmp/p | tr '\\n' ' ')"
iperf3 -c ${HOST_IP} -t ${seconds} -f m > /tmp/i1 2>&1; res tx $? "$(grep receiver /tmp/i1 | tail -1)"
iperf3 -c ${HOST_IP} -t ${seconds} -f m -R > /tmp/i2 2>&1; res rx $? "$(grep receiver /tmp/i2 | tail -1)"
`,
  });
  cleanups.push(() => g.cleanup());
  const r = await g.done();
  const ctx = `guest console:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(20)}`;
  const get = (k: string) => r.get(k) ?? { rc: -999, text: 'missing' };
  console.log(
    `guest result: ${JSON.stringify({ test: label, ping: get('ping'), txMbits: mbits(get('tx').text), rxMbits: mbits(get('rx').text) })}`,
  );
  expect(get('ping').rc, ctx).toBe(0);
  expect(get('tx').rc, ctx).toBe(0);
  expect(get('rx').rc, ctx).toBe(0);
  expect(mbits(get('tx').text), ctx).toBeGreaterThan(0);
  return { g };
}
