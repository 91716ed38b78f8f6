/**
 * DPDK's testpmd with net_virtio_user as an independent front-end: it connects, negotiates,
 * maps its memory and starts its queues against our backend.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { hasFeature, ProtocolFeature, VirtioFeature } from '../src/features.js';
import { requestName } from '../src/vhost-user/codec.js';
import { native, openFds, type Served, serve, waitFor } from './helpers/harness.js';
import { Proc, requireCommand } from './helpers/processes.js';

let srv: Served | undefined;
let pmd: Proc | undefined;

afterEach(async () => {
  await pmd?.stop('SIGINT');
  srv?.stop();
});

describe.each([1, 2])('dpdk-testpmd virtio_user with %i queue pair(s)', (queues) => {
  it('negotiates and starts every vring', async () => {
    const testpmd = requireCommand('dpdk-testpmd', 'dpdk-dev');
    const fdsBefore = openFds();
    srv = serve({ queuePairs: queues });
    const seen: string[] = [];
    srv.backend.on('message', (_s, h) => seen.push(requestName(h.request)));
    const next = srv.nextSession();
    pmd = new Proc(testpmd, [
      '-l',
      '0,1',
      '--no-pci',
      '--no-huge',
      '-m',
      '512',
      '--file-prefix',
      `vun-test-${process.pid}-${queues}`,
      '--vdev',
      `net_virtio_user0,path=${srv.path},queues=${queues}`,
      '--',
      `--rxq=${queues}`,
      `--txq=${queues}`,
      '--total-num-mbufs=16384',
      '--stats-period',
      '1',
    ]);
    const session = await next;
    try {
      await waitFor(() => session.vrings.every((v) => v.started), 30_000, 'testpmd to start all vrings');
    } catch (e) {
      throw new Error(`${(e as Error).message}\ntestpmd output:\n${pmd.tail()}\nrequests: ${seen.join(' ')}`);
    }
    expect(session.ackedFeatures !== undefined && hasFeature(session.ackedFeatures, VirtioFeature.F_VERSION_1)).toBe(
      true,
    );
    expect(session.hasProtocolFeature(ProtocolFeature.MQ)).toBe(true);
    expect(session.memory.regions.length).toBeGreaterThan(0);
    expect(session.vrings.every((v) => session.isEnabled(v))).toBe(true);
    for (const r of [
      'GET_FEATURES',
      'SET_FEATURES',
      'SET_MEM_TABLE',
      'SET_VRING_ADDR',
      'SET_VRING_KICK',
      'SET_VRING_ENABLE',
    ]) {
      expect(seen, r).toContain(r);
    }
    // testpmd stopping its port stops the rings (GET_VRING_BASE) and closes the connection.
    const closed = srv.sessionClosed();
    await pmd.stop('SIGINT');
    await closed;
    expect(seen).toContain('GET_VRING_BASE');
    expect(native.mappingCount()).toBe(0);
    srv.stop();
    srv = undefined;
    expect(openFds()).toBe(fdsBefore);
  }, 60_000);
});
