/**
 * Live migration with a real QEMU on this host (src/guest/migration.ts): source and destination
 * each on their own backend and TAP, both TAPs in one bridge in a namespace of ours, the guest
 * pinging and moving TCP while QMP `migrate` runs. Asserts that the migration completes, that
 * traffic goes on through the destination, and that the bridge learned the destination's port
 * from our RARP: the first frame from the guest MAC on the destination's TAP is the announce.
 * The figures go to .test-results/ (and bench/migration.bench.mjs measures them repeatedly).
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runMigration } from '../src/guest/migration.js';
import { packageRoot } from '../src/native.js';

describe('live migration between two backends', () => {
  it('completes with traffic flowing, and the bridge follows the guest by our RARP', async () => {
    const r = await runMigration();
    const { logs, ...figures } = r;
    const line = JSON.stringify({ test: 'migration', ...figures });
    console.log(`guest result: ${line}`);
    mkdirSync(join(packageRoot, '.test-results'), { recursive: true });
    appendFileSync(join(packageRoot, '.test-results', 'guest-results.jsonl'), `${line}\n`);
    writeFileSync(join(packageRoot, '.test-results', 'migration-console.txt'), logs.destinationConsole);
    const ctx = `${line}\nsource backend:\n${logs.source}\ndestination backend:\n${logs.destination}\nsource console:\n${logs.sourceConsole}\ndestination console:\n${logs.destinationConsole}`;
    expect(r.status, ctx).toBe('completed');
    expect(r.destinationStatus, ctx).toBe('running');
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
  }, 240_000);
});
