/**
 * Live migration with a real QEMU on this host (src/guest/migration.ts): source and destination
 * each on their own backend and TAP, both TAPs in one bridge in a namespace of ours, the guest
 * pinging and moving TCP while QMP `migrate` runs. Asserts that the migration completes, that
 * the destination's RAM equals the source's at the handover (the dirty log carried every page
 * the device wrote), that traffic goes on through the destination, and that the bridge learned
 * the destination's port from our RARP: the first frame from the guest MAC on the destination's
 * TAP is the announce. The figures go to .test-results/ (and bench/migration.bench.mjs measures
 * them repeatedly).
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type MigrationResult, type RamCheck, runMigration } from '../src/guest/migration.js';
import { packageRoot } from '../src/native.js';

/**
 * QEMU 7.2 under TCG now and then loses guest writes across a migration on a loaded host: the
 * destination starts with a few stale pages of guest kernel memory and the guest crashes. QEMU's
 * own virtio-net, with no backend of ours, does the same (docs/migration.md, "QEMU loses guest
 * pages under TCG"). Such a run says nothing about the device, so it is run again, at most twice,
 * when no stale byte lies in a used ring (the one part of a vring the device writes; a stale
 * descriptor table or avail ring is the guest's write lost). A run that lost a used ring byte
 * fails at once, and the third run fails whatever it lost.
 */
const ATTEMPTS = 3;

describe('live migration between two backends', () => {
  it(
    'completes with traffic flowing and the RAM equal on both sides, and the bridge follows the guest by our RARP',
    async () => {
      const lost: RamCheck[] = [];
      let r: MigrationResult;
      for (let attempt = 1; ; attempt++) {
        r = await runMigration({ verifyRam: true });
        const ram = r.ram;
        if (!ram || ram.count === 0 || ram.deviceRingPages.length > 0 || attempt === ATTEMPTS) break;
        lost.push(ram);
        console.warn(
          `MIGRATION RUN AGAIN: QEMU handed over ${ram.count} stale guest pages (${ram.differing.slice(0, 8).join(' ')}), ` +
            `no used ring among them (vring pages: ${JSON.stringify(ram.ringBytes)}): attempt ${attempt + 1} of ${ATTEMPTS}`,
        );
      }
      const { logs, capture: _capture, ...figures } = r;
      const line = JSON.stringify({ test: 'migration', ...figures, attempts: lost.length + 1, lost });
      console.log(`guest result: ${line}`);
      mkdirSync(join(packageRoot, '.test-results'), { recursive: true });
      appendFileSync(join(packageRoot, '.test-results', 'guest-results.jsonl'), `${line}\n`);
      writeFileSync(join(packageRoot, '.test-results', 'migration-source-console.txt'), logs.sourceConsole);
      writeFileSync(join(packageRoot, '.test-results', 'migration-console.txt'), logs.destinationConsole);
      const tail = (s: string) => s.split('\n').slice(-60).join('\n');
      const ctx = `${line}\nsource backend:\n${logs.source}\ndestination backend:\n${logs.destination}\nsource console:\n${tail(logs.sourceConsole)}\ndestination console (whole: .test-results/migration-console.txt):\n${tail(logs.destinationConsole)}`;
      expect(r.status, ctx).toBe('completed');
      expect(r.destinationStatus, ctx).toBe('running');
      // Every page the device wrote reached the destination; the used rings above all.
      expect(r.ram?.pages, ctx).toBeGreaterThan(0);
      expect(r.ram?.deviceRingPages, ctx).toEqual([]);
      expect(r.ram?.ringPages, ctx).toEqual([]);
      expect(r.ram?.count, ctx).toBe(0);
      // The bridge moved the guest's MAC to the destination's port, and the first frame it saw
      // from that MAC there was a RARP (0x8035): the announce, before any guest traffic.
      expect(r.fdbPort, ctx).toBe('vunB');
      expect(r.firstFrameType, ctx).toBe('0x8035');
      expect(logs.destination, ctx).toMatch(/SEND_RARP/);
      // Traffic went on: TCP finished, pings were answered after the switch, the host reaches
      // the guest through the destination.
      expect(r.iperf.rc, ctx).toBe(0);
      expect(r.pingsSent, ctx).toBeGreaterThan(200);
      expect(r.pingsAnswered, ctx).toBeGreaterThan(r.pingsSent * 0.8);
      expect(r.hostPingRc, ctx).toBe(0);
    },
    3 * 240_000,
  );
});
