/**
 * A real QEMU (Debian 12: 7.2) attaches with -netdev vhost-user and negotiates completely;
 * its firmware's virtio-net driver (iPXE) maps memory and starts the receive ring. Then the
 * backend is restarted under a running QEMU, which reconnects.
 */
import { chmodSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VhostUserNetBackend } from '../src/backend.js';
import { hasFeature, ProtocolFeature, VirtioFeature } from '../src/features.js';
import { silentLogger } from '../src/log.js';
import { requestName } from '../src/vhost-user/codec.js';
import type { Session } from '../src/vhost-user/session.js';
import { native, openFds, type Served, serve, tempDir, waitFor } from '../test/helpers/harness.js';
import type { Proc } from '../src/util/proc.js';
import { startQemu } from '../src/guest/qemu.js';
import { userId } from '../src/service/users.js';

let qemu: Proc | undefined;
const cleanups: (() => void)[] = [];

afterEach(async () => {
  await qemu?.stop();
  qemu = undefined;
  for (const c of cleanups.splice(0)) c();
});

function record(backend: VhostUserNetBackend): string[] {
  const seen: string[] = [];
  backend.on('message', (_s, h) => seen.push(requestName(h.request)));
  return seen;
}

async function waitDriverStarted(session: Session, seen: string[], q: Proc): Promise<void> {
  try {
    await waitFor(() => session.vrings[0]?.started === true, 90_000, "QEMU's guest driver to start receiveq 0");
  } catch (e) {
    throw new Error(`${(e as Error).message}\nQEMU output:\n${q.tail()}\nrequests: ${seen.join(' ')}`);
  }
}

describe('QEMU as the vhost-user front-end', () => {
  it('an unprivileged QEMU (nobody) reaches a 0660 socket whose group is its own, not a 0600 one', async () => {
    const nobody = userId('nobody');
    for (const allowed of [false, true]) {
      const srv: Served = serve(
        allowed ? { socketMode: 0o660, socketOwner: { uid: -1, gid: nobody.gid } } : { socketMode: 0o600 },
      );
      cleanups.push(() => srv.stop());
      chmodSync(dirname(srv.path), 0o711); // the directory may be searched; the socket decides
      const st = statSync(srv.path);
      expect([st.mode & 0o777, st.gid]).toEqual(allowed ? [0o660, nobody.gid] : [0o600, 0]);
      const next = srv.nextSession();
      const q = startQemu({ socketPath: srv.path, runAs: nobody });
      qemu = q;
      if (!allowed) {
        await waitFor(() => !q.running, 30_000, 'QEMU to give up');
        expect(q.output).toMatch(/Permission denied/);
        expect(srv.backend.sessions).toBe(0);
        continue;
      }
      const session = await next;
      await waitDriverStarted(session, record(srv.backend), q);
      expect(session.owner).toBe(true);
    }
  }, 120_000);

  it('negotiates, maps guest memory and starts rings (backend listens)', async () => {
    const fdsBefore = openFds();
    const srv: Served = serve({ queuePairs: 1 });
    cleanups.push(() => srv.stop());
    const seen = record(srv.backend);
    const next = srv.nextSession();
    qemu = startQemu({ socketPath: srv.path });
    const session = await next;
    await waitDriverStarted(session, seen, qemu);

    expect(session.owner).toBe(true);
    // QEMU follows the rules our lint knows.
    expect(Object.fromEntries(session.lint)).toEqual({});
    const acked = session.ackedFeatures ?? 0n;
    expect(hasFeature(acked, VirtioFeature.F_VERSION_1)).toBe(true);
    expect(hasFeature(acked, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)).toBe(true);
    for (const bit of [ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.STATUS]) {
      expect(session.hasProtocolFeature(bit)).toBe(true);
    }
    // QEMU 7.2 with CONFIGURE_MEM_SLOTS adds regions one by one; guest RAM is 256 MiB.
    expect(seen).toContain('ADD_MEM_REG');
    const total = session.memory.regions.reduce((a, r) => a + r.size, 0n);
    expect(total).toBeGreaterThanOrEqual(256n << 20n);
    expect(session.vrings[0]?.num).toBeGreaterThan(0);
    expect(session.isEnabled(session.vrings[0] as never)).toBe(true);
    for (const r of [
      'GET_FEATURES',
      'GET_PROTOCOL_FEATURES',
      'SET_PROTOCOL_FEATURES',
      'GET_QUEUE_NUM',
      'SET_OWNER',
      'SET_FEATURES',
      'SET_VRING_NUM',
      'SET_VRING_ADDR',
      'SET_VRING_BASE',
      'SET_VRING_KICK',
      'SET_VRING_CALL',
      'SET_VRING_ENABLE',
    ]) {
      expect(seen, r).toContain(r);
    }
    const closed = srv.sessionClosed();
    await qemu.stop();
    await closed;
    expect(native.mappingCount()).toBe(0);
    srv.stop();
    cleanups.length = 0;
    expect(openFds()).toBe(fdsBefore);
  }, 120_000);

  it('with 2 queue pairs, QEMU listening and the backend dialling', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const path = join(tmp.dir, 'qemu.sock');
    qemu = startQemu({ socketPath: path, qemuServer: true, queuePairs: 2 });
    const backend = new VhostUserNetBackend(
      { socketPath: path, client: true, socketMode: 0o600, queuePairs: 2, reconnectMinMs: 50, reconnectMaxMs: 500 },
      silentLogger(),
    );
    cleanups.unshift(() => backend.stop());
    const seen = record(backend);
    const next = new Promise<Session>((r) => backend.once('session', r));
    backend.start();
    const session = await next;
    await waitDriverStarted(session, seen, qemu);
    expect(session.vrings.length).toBe(4);
    expect(seen).toContain('GET_QUEUE_NUM');
    // One vhost_dev per queue pair: each reads the features and sets its own vring calls.
    expect(seen.filter((r) => r === 'GET_FEATURES').length, seen.join(' ')).toBeGreaterThanOrEqual(2);
    expect(session.vrings[2]?.callFd, 'pair 1 got its call fd').toBeGreaterThanOrEqual(0);
  }, 120_000);

  it('QEMU with reconnect=1 comes back to a restarted backend', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const path = join(tmp.dir, 'vhost.sock');
    const make = () =>
      new VhostUserNetBackend(
        { socketPath: path, client: false, socketMode: 0o600, queuePairs: 1, reconnectMinMs: 20, reconnectMaxMs: 200 },
        silentLogger(),
      );
    const first = make();
    const seen = record(first);
    const next = new Promise<Session>((r) => first.once('session', r));
    first.start();
    qemu = startQemu({ socketPath: path, reconnect: true });
    const s1 = await next;
    await waitFor(() => s1.owner, 60_000, 'first negotiation');
    const closed = new Promise((r) => first.once('sessionClosed', r));
    first.stop(); // the backend goes away while QEMU runs
    await closed;
    const again = make();
    cleanups.push(() => again.stop());
    const seen2 = record(again);
    const next2 = new Promise<Session>((r) => again.once('session', r));
    again.start();
    const s2 = await next2;
    await waitFor(() => s2.owner && seen2.includes('GET_FEATURES'), 30_000, 'QEMU to reconnect and negotiate again');
    expect(seen.length).toBeGreaterThan(0);
    expect(qemu.running).toBe(true);
  }, 120_000);
});
