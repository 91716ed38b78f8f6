/**
 * DPDK's testpmd with net_virtio_user as an independent front-end: it connects, negotiates,
 * maps its memory and starts its queues against our backend, with split rings and with packed
 * rings (`packed_vq=1`, virtio 1.2 §2.8).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { hasFeature, ProtocolFeature, VirtioFeature } from '../src/features.js';
import { requestName } from '../src/vhost-user/codec.js';
import { native, openFds, type Served, serve, waitFor } from './helpers/harness.js';
import { Proc, requireCommand } from '../src/util/proc.js';

/** dpdk-testpmd with net_virtio_user as the front-end (plays QEMU and the guest driver). */
function frontEnd(
  path: string,
  queues: number,
  tag: string,
  testpmdArgs: string[],
  packed = false,
  inOrder = false,
): Proc {
  const testpmd = requireCommand('dpdk-testpmd', 'dpdk-dev');
  const devargs = `queues=${queues}${packed ? ',packed_vq=1' : ''},in_order=${inOrder ? 1 : 0}`;
  return new Proc(testpmd, [
    ...['-l', '0,1', '--no-pci', '--no-huge', '-m', '512', '--file-prefix', `vun-test-${process.pid}-${tag}`],
    ...['--vdev', `net_virtio_user0,path=${path},${devargs}`],
    ...['--', ...testpmdArgs],
  ]);
}

const layouts = [
  ['split', false],
  ['packed', true],
] as const;

let srv: Served | undefined;
let pmd: Proc | undefined;

afterEach(async () => {
  await pmd?.stop('SIGINT');
  srv?.stop();
});

describe.each(layouts.flatMap(([name, packed]) => [1, 2].map((q) => [name, packed, q] as const)))(
  'dpdk-testpmd virtio_user, %s rings, %i queue pair(s)',
  (name, packed, queues) => {
    it('negotiates and starts every vring', async () => {
      const fdsBefore = openFds();
      srv = serve({ queuePairs: queues });
      const seen: string[] = [];
      srv.backend.on('message', (_s, h) => seen.push(requestName(h.request)));
      const next = srv.nextSession();
      pmd = frontEnd(
        srv.path,
        queues,
        `${name}${queues}`,
        [`--rxq=${queues}`, `--txq=${queues}`, '--total-num-mbufs=16384', '--stats-period', '1'],
        packed,
      );
      const session = await next;
      try {
        await waitFor(() => session.vrings.every((v) => v.started), 30_000, 'testpmd to start all vrings');
      } catch (e) {
        throw new Error(`${(e as Error).message}\ntestpmd output:\n${pmd.tail()}\nrequests: ${seen.join(' ')}`);
      }
      expect(session.ackedFeatures !== undefined && hasFeature(session.ackedFeatures, VirtioFeature.F_VERSION_1)).toBe(
        true,
      );
      expect(session.packed()).toBe(packed);
      expect(session.hasProtocolFeature(ProtocolFeature.MQ)).toBe(true);
      expect(session.memory.regions.length).toBeGreaterThan(0);
      expect(session.vrings.every((v) => session.isEnabled(v))).toBe(true);
      // virtio_user follows the rules our lint knows.
      expect(Object.fromEntries(session.lint)).toEqual({});
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
  },
);

// in_order=1: virtio_user acks VIRTIO_F_IN_ORDER; our transmitq then publishes one used
// element per burst (§2.7.9, §2.8.9) and testpmd frees the whole batch from it.
describe.each([
  ['split', false, 'native', 1, 10_000, false],
  ['packed', true, 'native', 1, 10_000, false],
  ['packed', true, 'native', 2, 10_000, false],
  ['packed', true, 'ts', 1, 1_000, false],
  ['split+IN_ORDER', false, 'native', 1, 10_000, true],
  ['packed+IN_ORDER', true, 'native', 1, 10_000, true],
  ['packed+IN_ORDER', true, 'ts', 1, 1_000, true],
] as const)(
  'dpdk-testpmd through the loopback backend, %s rings, %s data path, %i pair(s)',
  (name, packed, datapath, queues, least, inOrder) => {
    it('frames it sends (io forwarding, --tx-first) come back to it, and both sides count them', async () => {
      srv = serve({ queuePairs: queues }, { kind: 'loopback' }, datapath);
      const next = srv.nextSession();
      pmd = frontEnd(
        srv.path,
        queues,
        `lb-${name}-${datapath}-${queues}`,
        [
          '--forward-mode=io',
          '--tx-first',
          '--txpkts=64',
          `--rxq=${queues}`,
          `--txq=${queues}`,
          '--total-num-mbufs=16384',
          '--stats-period',
          '1',
        ],
        packed,
        inOrder,
      );
      const session = await next;
      await waitFor(() => session.vrings.every((v) => v.started), 30_000, 'testpmd to start its vrings');
      expect(session.packed()).toBe(packed);
      expect(hasFeature(session.ackedFeatures ?? 0n, VirtioFeature.F_IN_ORDER)).toBe(inOrder);
      const counters = {
        all: () => session.vrings.map((v) => session.counters(v.index)),
        /** Summed over the receiveqs (toGuest) or the transmitqs (fromGuest). */
        sum: (of: 'toGuest' | 'fromGuest', k: 'frames' | 'bytes' | 'ringErrors') =>
          counters
            .all()
            .filter((_c, i) => i % 2 === (of === 'toGuest' ? 0 : 1))
            .reduce((a, c) => a + c[k], 0),
      };
      await waitFor(() => counters.sum('toGuest', 'frames') > least, 30_000, 'frames looped back').catch((e) => {
        throw new Error(`${(e as Error).message}: ${JSON.stringify(counters.all())}\n${pmd?.tail(20)}`);
      });
      await pmd.stop('SIGINT');
      const stats = /Forward statistics for port 0[\s\S]*?RX-packets: (\d+)[\s\S]*?TX-packets: (\d+)/.exec(pmd.output);
      expect(stats, pmd.tail(30)).not.toBeNull();
      const rx = Number(stats?.[1]);
      const tx = Number(stats?.[2]);
      const ours = { fromGuest: counters.sum('fromGuest', 'frames'), toGuest: counters.sum('toGuest', 'frames') };
      console.log(
        `testpmd loopback (${name}, ${datapath}, ${queues} pairs): testpmd tx ${tx} rx ${rx}; backend fromGuest ${ours.fromGuest} toGuest ${ours.toGuest}`,
      );
      expect(tx).toBeGreaterThan(least);
      expect(rx).toBeGreaterThan(least);
      expect(counters.sum('toGuest', 'ringErrors') + counters.sum('fromGuest', 'ringErrors')).toBe(0);
      // Both pairs carried frames (io forwarding keeps each queue's frames on that queue).
      if (queues > 1) for (const c of counters.all()) expect(c.frames).toBeGreaterThan(0);
      // Everything testpmd received, we delivered; everything we delivered, it had sent. (Its
      // own counters stop a little before ours: compare with the slack of a few rings.)
      expect(ours.toGuest).toBeGreaterThanOrEqual(rx);
      expect(ours.fromGuest).toBeGreaterThanOrEqual(ours.toGuest);
      expect(tx + 1024 * queues).toBeGreaterThanOrEqual(ours.fromGuest);
      expect(counters.sum('toGuest', 'bytes')).toBe(ours.toGuest * 64);
    }, 90_000);
  },
);
