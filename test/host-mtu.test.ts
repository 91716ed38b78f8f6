/**
 * The MTU on the host side: NET_SET_MTU from the front-end is applied to the TAP the backend
 * owns; `--mtu` sets the TAP's MTU at start and keeps it. The real backend, a TAP in a
 * namespace of ours, and a front-end that sends NET_SET_MTU.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Netns, requireRoot, startBackend, waitForLink } from '../src/guest/guest.js';
import { encodeU64 } from '../src/vhost-user/codec.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const mtuOf = (ns: Netns) => Number(/mtu (\d+)/.exec(ns.sh('ip link show vun0'))?.[1]);

describe('the host interface MTU', () => {
  it.each([
    ['follows NET_SET_MTU', [], 1500, 9000],
    ['is --mtu, kept against NET_SET_MTU', ['--mtu', '4000'], 4000, 4000],
  ])('%s', async (_what, args, atStart, afterSet) => {
    requireRoot('the MTU test (a TAP in a namespace)');
    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    const backend = startBackend(ns, sock, ['--backend', 'tap:vun0', ...args]);
    cleanups.push(() => backend.stop());
    await waitForLink(ns, 'vun0');
    await waitFor(() => existsSync(sock), 10_000, 'the backend socket');
    expect(mtuOf(ns)).toBe(atStart);
    const fe = MockFrontend.connect(native, sock);
    cleanups.push(() => fe.close());
    await fe.handshake();
    expect(await fe.acked('NET_SET_MTU', encodeU64(9000n))).toBe(0n);
    await waitFor(() => /front-end MTU and the host interface/.test(backend.output), 5000, 'the MTU handled');
    expect(mtuOf(ns)).toBe(afterSet);
    expect(backend.output).toMatch(afterSet === 9000 ? /"result":"applied"/ : /"result":"kept"/);
  });
});
