/**
 * The live ring page: `/rings` reads every ring from guest memory, and `/rings.html` draws it.
 * Headless Chromium (Debian's `chromium`) loads the page from the backend's HTTP endpoint; the
 * rendered DOM must show the rings' state, and a screenshot is kept in .test-results/.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { startHttp } from '../src/metrics/http.js';
import type { RingSnapshot } from '../src/metrics/rings.js';
import { packageRoot } from '../src/native.js';
import { chromium } from './helpers/chromium.js';
import { bringUpDevice, native, serve, tempDir, waitFor } from './helpers/harness.js';
import { type DriverPair, transmit } from './helpers/mock-frontend.js';

describe.each(['native', 'ts'] as const)('live ring page (%s data path)', (datapath) => {
  it('serves ring snapshots from guest memory and renders them in headless Chromium', async () => {
    const srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, datapath);
    const { server, port } = await startHttp(srv.backend, '127.0.0.1', 0);
    const { fe, session, ram, pairs } = await bringUpDevice(
      srv,
      featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES),
    );
    const { receiveq, kicks } = pairs[0] as DriverPair;
    // Eight receive chains of two descriptors each; three frames use three of them.
    for (let i = 0; i < 8; i++) {
      const at = 0x100000 + i * 4096;
      receiveq.offer(
        receiveq.addChain([
          { addr: BigInt(at), len: 1024, write: true },
          { addr: BigInt(at + 1024), len: 1024, write: true },
        ]),
      );
    }
    receiveq.publish();
    native.eventfdWrite(kicks.receiveq, 1n);
    await waitFor(() => session.vrings[0]?.started === true);
    transmit(native, ram, pairs[0] as DriverPair, Array(3).fill(Buffer.alloc(100, 0xee)));
    await waitFor(() => receiveq.usedIdx() === 3, 5000, 'frames looped back');
    // (Chains offered on a transmitq without a kick are no steady state: any event of the pair
    // may process them. The receiveq's spare buffers are: nothing comes to fill them.)

    const base = `http://127.0.0.1:${port}`;
    const snap = (await (await fetch(`${base}/rings`)).json()) as { connected: boolean; vrings: RingSnapshot[] };
    expect(snap.connected).toBe(true);
    const rq = snap.vrings.find((v) => v.index === 0) as RingSnapshot;
    const tq = snap.vrings.find((v) => v.index === 1) as RingSnapshot;
    expect(rq).toMatchObject({ queue: 'receiveq0', size: 256, availIdx: 8, lastAvailIdx: 3, usedIdx: 3, inFlight: 0 });
    expect(rq.chains.map((c) => c.state)).toEqual(Array(5).fill('avail'));
    expect(rq.chains[0]).toMatchObject({ descs: [6, 7], bytes: 2048 });
    expect(rq.desc.filter((d) => d.state === 'avail')).toHaveLength(10);
    expect(rq.usedRing.slice(0, 3)).toEqual([
      { id: 0, len: 112 },
      { id: 2, len: 112 },
      { id: 4, len: 112 },
    ]);
    expect(tq).toMatchObject({ queue: 'transmitq0', availIdx: 3, lastAvailIdx: 3, usedIdx: 3, inFlight: 0 });
    expect(tq.chains).toHaveLength(0);
    expect(tq.desc.filter((d) => d.state !== 'free')).toHaveLength(0);

    // The page, rendered by Chromium after its scripts ran.
    const profile = tempDir('vun-chromium-');
    try {
      const dom = await chromium(profile.dir, ['--dump-dom', `${base}/rings.html`]);
      const panels = dom.split('<div class="vring"').slice(1);
      expect(panels).toHaveLength(2);
      const p0 = panels.find((p) => p.includes('data-vring="0"')) as string;
      expect(p0).toContain('receiveq0 · vring 0 · size 256 · started, enabled');
      expect(p0).toContain('avail.idx 8   last_avail_idx 3   used.idx 3   in flight 0');
      expect(p0.match(/class="desc desc-avail"/g)).toHaveLength(10);
      expect(p0.match(/class="desc desc-free"/g)).toHaveLength(246);
      expect(p0.match(/class="slot slot-avail"/g)).toHaveLength(5);
      expect(p0).toContain('head 6: 6 → 7  (2048 bytes)');
      expect(p0).toContain('last used: id 0 len 112, id 2 len 112, id 4 len 112');
      const p1 = panels.find((p) => p.includes('data-vring="1"')) as string;
      expect(p1).toContain('avail.idx 3   last_avail_idx 3   used.idx 3   in flight 0');
      expect(p1.match(/class="slot slot-avail"/g)).toBeNull();
      expect(p1.match(/class="desc desc-free"/g)).toHaveLength(256);

      const dir = join(packageRoot, '.test-results');
      mkdirSync(dir, { recursive: true });
      const png = join(dir, `ring-page-${datapath}.png`);
      await chromium(profile.dir, [`--screenshot=${png}`, `${base}/rings.html`]);
      const img = readFileSync(png);
      expect(img.subarray(1, 4).toString()).toBe('PNG');
      expect([img.readUInt32BE(16), img.readUInt32BE(20)]).toEqual([1280, 900]);
      expect(img.length).toBeGreaterThan(20_000); // a drawn page, not a blank one
      console.log(`ring page screenshot: ${png} (${img.length} bytes)`);
    } finally {
      profile.cleanup();
      server.close();
      const closed = srv.sessionClosed();
      fe.close();
      await closed;
      srv.stop();
    }
  }, 120_000);
});
