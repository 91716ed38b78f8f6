/**
 * The main job, as the README says to run it: `npm run demo` (set-up checks, build, then a Linux
 * guest on the backend: ping both ways, iperf3 both ways, the counters, the captured pings).
 * It must exit 0, say that all traffic flowed, show both iperf3 figures, the per-queue counters
 * and the first pings as tshark read them, and leave no namespace of its own behind.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';

describe('npm run demo', () => {
  it('runs the demo end to end and cleans up', () => {
    const before = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    const r = spawnSync('npm', ['run', '--silent', 'demo'], {
      cwd: packageRoot,
      encoding: 'utf8',
      timeout: 600_000,
      env: { ...process.env, LD_PRELOAD: '' },
    });
    const out = `${r.stdout}${r.stderr}`;
    expect(r.status, out.slice(-3000)).toBe(0);
    expect(out).toContain('demo: all traffic flowed through vhost-user-net.');
    expect(out).toMatch(/guest -> host: \d+ Mbit\/s/);
    expect(out).toMatch(/host -> guest: \d+ Mbit\/s/);
    // The counters of both vrings, and the pings as captured (tshark on the pcapng).
    expect(out).toMatch(/^\s+receiveq0\s+\d+/m);
    expect(out).toMatch(/^\s+transmitq0\s+\d+/m);
    expect(out).toMatch(/the first pings as captured/);
    expect(out).toMatch(/Echo \(ping\) request/);
    const after = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    expect(after).toBe(before);
  }, 700_000);
});
