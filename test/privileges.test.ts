/**
 * `--user`: the backend opens its socket and TAP as root, then drops to an unprivileged user
 * and goes on serving: the front-end negotiates, maps memory, and frames reach the TAP. What
 * needs root afterwards is refused and logged, not fatal (docs/privileges.md): here,
 * NET_SET_MTU on the TAP.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { Netns, requireRoot, startBackend, waitForLink } from '../src/guest/guest.js';
import { encodeU64 } from '../src/vhost-user/codec.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { type DriverPair, MockFrontend, transmit } from './helpers/mock-frontend.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ids = (pid: number) => {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string) => (new RegExp(`^${k}:\\s+(\\d+)\\s+(\\d+)`, 'm').exec(st) ?? []).slice(1).map(Number);
  return { uid: field('Uid'), gid: field('Gid'), groups: /^Groups:\s*(.*)$/m.exec(st)?.[1]?.trim() };
};

describe('--user', () => {
  it('drops to nobody:nogroup after opening the socket and the TAP, and serves on', async () => {
    requireRoot('the privileges test (a TAP in a namespace)');
    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    const backend = startBackend(ns, sock, ['--backend', 'tap:vun0', '--user', 'nobody:nogroup']);
    cleanups.push(() => backend.stop());
    await waitForLink(ns, 'vun0');
    await waitFor(() => /privileges dropped/.test(backend.output) || !backend.running, 10_000, 'the drop');
    expect(existsSync(sock)).toBe(true);
    // Real, effective, saved and filesystem ids all 65534; no supplementary group but nogroup.
    const who = ids(backend.pid);
    expect(who.uid, backend.tail(10)).toEqual([65534, 65534]);
    expect(who.gid).toEqual([65534, 65534]);
    expect(who.groups).toBe('65534');
    const fe = MockFrontend.connect(native, sock);
    cleanups.push(() => fe.close());
    await fe.handshake();
    const { ram, pairs } = await fe.bringUp(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES), 1);
    // Every thread (the data-plane workers too) runs as nobody.
    for (const t of readdirSync(`/proc/${backend.pid}/task`)) {
      expect(ids(Number(t)).uid, `thread ${t}`).toEqual([65534, 65534]);
    }
    const rx = () => Number(/RX:.*\n\s+\d+\s+(\d+)/.exec(ns.sh('ip -s link show vun0'))?.[1]);
    const before = rx();
    const frame = Buffer.alloc(60, 0);
    frame.fill(0xff, 0, 6);
    Buffer.from([0x02, 0, 0, 0, 0, 9, 0x88, 0xb5]).copy(frame, 6);
    transmit(native, ram, pairs[0] as DriverPair, [frame, frame, frame]);
    await waitFor(() => rx() - before >= 3, 5000, 'frames on the TAP');
    // NET_SET_MTU needs CAP_NET_ADMIN, which nobody lacks: refused and logged, the session goes on.
    expect(await fe.acked('NET_SET_MTU', encodeU64(9000n))).toBe(0n);
    await waitFor(() => /the host interface refused the MTU/.test(backend.output), 5000, 'the refusal logged');
    expect(/mtu (\d+)/.exec(ns.sh('ip link show vun0'))?.[1]).toBe('1500');
    expect(backend.running).toBe(true);
  }, 60_000);
});
