/**
 * SEND_RARP sends a RARP: the frame QEMU's announce sends (broadcast, ethertype 0x8035, the
 * guest MAC as source and as sender and target hardware address), 5 times with QEMU's backoff,
 * out of the host port. Read back on the host side of a TAP the real backend created in a
 * namespace of ours, with tshark, on both data paths.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { Netns, requireRoot, startBackend, waitForLink } from '../src/guest/guest.js';
import { ANNOUNCE_GAPS_MS, rarpFrame } from '../src/net/rarp.js';
import type { Proc } from '../src/util/proc.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

const cleanups: (() => void | Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('the RARP frame', () => {
  it("is QEMU's announce frame, byte for byte", () => {
    const f = rarpFrame('52:54:00:12:34:56');
    expect(f.length).toBe(60);
    expect(f.subarray(0, 42).toString('hex')).toBe(
      'ffffffffffff' +
        '525400123456' +
        '8035' +
        '0001' +
        '0800' +
        '06' +
        '04' +
        '0003' +
        '525400123456' +
        '00000000' +
        '525400123456' +
        '00000000',
    );
    expect(f.subarray(42).every((b) => b === 0)).toBe(true);
  });
});

describe.each(['native', 'ts'] as const)('SEND_RARP on the %s data path', (datapath) => {
  it('announces the guest MAC 5 times with backoff, out of the TAP', async () => {
    requireRoot('the RARP test (a TAP in a namespace)');
    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    const backend = startBackend(ns, sock, ['--backend', 'tap:vun0', '--datapath', datapath]);
    cleanups.push(() => backend.stop());
    await waitForLink(ns, 'vun0');
    ns.sh('ip link set vun0 up');
    await waitFor(() => existsSync(sock), 10_000, 'the backend socket');
    const fields = ['frame.time_relative', 'eth.dst', 'eth.src', 'arp.opcode', 'arp.src.hw_mac', 'arp.dst.hw_mac'];
    const cap: Proc = ns.spawn('tshark', [
      '-i',
      'vun0',
      '-a',
      'duration:5',
      '-f',
      'ether proto 0x8035',
      '-T',
      'fields',
      ...fields.flatMap((f) => ['-e', f]),
    ]);
    cleanups.push(() => cap.stop());
    // tshark says "Capturing on" before its filter is in place; "Capture started" after.
    await waitFor(() => /Capture started/.test(cap.output), 10_000, 'tshark capturing');
    await new Promise((r) => setTimeout(r, 300));

    const fe = MockFrontend.connect(native, sock);
    cleanups.push(() => fe.close());
    await fe.handshake();
    await fe.bringUp(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES, F.NET_F_MRG_RXBUF), 1);
    const mac = Buffer.from([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0, 0]);
    expect(await fe.acked('SEND_RARP', mac)).toBe(0n);
    await cap.exited;

    const rows = cap.output
      .split('\n')
      .map((l) => l.split('\t'))
      .filter((r) => r.length === fields.length && /^\d/.test(r[0] as string));
    expect(
      rows.map((r) => r.slice(1)),
      cap.output,
    ).toEqual(Array(5).fill(['ff:ff:ff:ff:ff:ff', '52:54:00:ab:cd:ef', '3', '52:54:00:ab:cd:ef', '52:54:00:ab:cd:ef']));
    // QEMU's backoff: 50 ms, then 100 ms more each round.
    const t = rows.map((r) => Number(r[0]) * 1000);
    const gaps = t.slice(1).map((x, i) => x - (t[i] as number));
    gaps.forEach((g, i) => expect(Math.abs(g - (ANNOUNCE_GAPS_MS[i + 1] as number))).toBeLessThan(40));
  }, 60_000);
});
