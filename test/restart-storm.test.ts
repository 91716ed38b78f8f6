/**
 * Restart storm (issue 12): DPDK's testpmd with net_virtio_user in server mode (it listens and
 * waits for the backend to come back) forwards every frame it receives back out (macswap),
 * while the backend (a separate process, in client mode, `null:source=64`: a frame source
 * toward the front-end, and a sink) is killed with SIGKILL and started again, 50 times. After
 * each restart traffic must resume both ways; through the whole storm testpmd must count no
 * receive error and every frame it took must be 64 bytes (RX-bytes = 64 x RX-packets): a
 * front-end that resumes a ring from a bad position, or reads a half-written used entry, sees
 * errors or frames of other lengths.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Proc, requireCommand } from '../src/util/proc.js';
import { tempDir, waitFor } from './helpers/harness.js';

const RESTARTS = Number(process.env.VUN_STORM_RESTARTS ?? 50);
const FRAME = 64;
// DPDK 22.11's virtio_user, killed while it still waits for a reply in its own start, stops
// serving its socket for good (docs/reliability.md): 500 ms after traffic resumed was not
// always past that on a loaded 2-core machine (a CI run lost restart 13 of 50 that way).
const SETTLE_MS = 1500;
const bin = join(import.meta.dirname, '..', 'bin', 'vhost-user-net.js');

interface PortStats {
  rxPackets: number;
  rxErrors: number;
  rxBytes: number;
  txPackets: number;
}

/** The last "NIC statistics for port 0" block testpmd printed (--stats-period). */
function lastStats(output: string): PortStats | undefined {
  const blocks = output.split('NIC statistics for port 0');
  const b = blocks[blocks.length - 1];
  if (blocks.length < 2 || !b) return undefined;
  const num = (re: RegExp) => Number(re.exec(b)?.[1] ?? NaN);
  const s = {
    rxPackets: num(/RX-packets:\s+(\d+)/),
    rxErrors: num(/RX-errors:\s+(\d+)/),
    rxBytes: num(/RX-bytes:\s+(\d+)/),
    txPackets: num(/TX-packets:\s+(\d+)/),
  };
  return Object.values(s).some(Number.isNaN) ? undefined : s;
}

let pmd: Proc | undefined;
let backend: Proc | undefined;
let tmp: { dir: string; cleanup(): void } | undefined;
afterEach(async () => {
  await backend?.stop('SIGKILL');
  await pmd?.stop('SIGINT');
  tmp?.cleanup();
  pmd = backend = tmp = undefined;
});

describe('restart storm with DPDK virtio_user (server mode)', () => {
  it(
    `${RESTARTS} SIGKILL restarts of the backend: traffic resumes after each, and testpmd never sees a bad frame`,
    async () => {
      const testpmd = requireCommand('dpdk-testpmd', 'dpdk-dev');
      tmp = tempDir('vun-storm-');
      const sock = join(tmp.dir, 'vhost.sock');
      pmd = new Proc(testpmd, [
        ...['-l', '0,1', '--no-pci', '--no-huge', '-m', '512', '--file-prefix', `vun-storm-${process.pid}`],
        ...['--vdev', `net_virtio_user0,path=${sock},queues=1,server=1`, '--'],
        ...['--forward-mode=macswap', '--auto-start', '--stats-period', '1', '--total-num-mbufs=16384'],
      ]);
      await waitFor(() => existsSync(sock), 20_000, 'testpmd to create its socket');
      const start = () =>
        new Proc(process.execPath, [
          bin,
          '--socket',
          sock,
          '--client',
          '--backend',
          `null:source=${FRAME}`,
          '--log-level',
          process.env.VUN_STORM_LOG ?? 'warn',
        ]);
      const stats = () => lastStats((pmd as Proc).output);
      /** Waits until testpmd's counters move by at least 1000 frames both ways past `from`. */
      const flowing = async (from: PortStats | undefined, what: string) => {
        await waitFor(
          () => {
            const s = stats();
            return (
              s !== undefined &&
              s.rxPackets >= (from?.rxPackets ?? 0) + 1000 &&
              s.txPackets >= (from?.txPackets ?? 0) + 1000
            );
          },
          20_000,
          what,
        );
      };
      backend = start();
      try {
        await flowing(undefined, 'traffic before the storm');
      } catch (e) {
        throw new Error(`${(e as Error).message}\ntestpmd:\n${pmd.tail(30)}\nbackend:\n${backend.tail(20)}`);
      }
      let recovered = 0;
      for (let i = 0; i < RESTARTS; i++) {
        await backend.stop('SIGKILL');
        const before = stats();
        backend = start();
        try {
          await flowing(before, `traffic after restart ${i + 1}`);
        } catch (e) {
          throw new Error(
            `${(e as Error).message} (${recovered} of ${i + 1} recovered)\ntestpmd:\n${(pmd as Proc).tail(30)}\nbackend:\n${backend.tail(20)}`,
          );
        }
        recovered++;
        // Let virtio_user finish its own start (LSC, status) before the next kill: killed while
        // it waits for a GET_VRING_BASE reply, DPDK 22.11's virtio_user stops listening for
        // good (docs/reliability.md).
        await new Promise((r) => setTimeout(r, SETTLE_MS));
      }
      const s = stats() as PortStats;
      console.log(`restart storm: ${recovered}/${RESTARTS} recovered; testpmd ${JSON.stringify(s)}`);
      expect(recovered).toBe(RESTARTS);
      expect(s.rxErrors).toBe(0);
      expect(s.rxBytes).toBe(s.rxPackets * FRAME);
    },
    RESTARTS * 25_000 + 60_000,
  );
});
