/**
 * The ring page's player in headless Chromium, driven over the DevTools protocol: the page
 * keeps a history of the ring trace (`/ring-events`), and the test pauses it, steps back to an
 * earlier chain and checks what the page shows for it (the narrator's sentence, the slots and
 * descriptors it highlights, the indices after it), then steps forward; for a split and a
 * packed ring. Without --trace-rings the player says how to get a history.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { startHttp } from '../src/metrics/http.js';
import { packageRoot } from '../src/native.js';
import { RingTrace } from '../src/trace/ring-trace.js';
import { chromium, chromiumPage, type Page } from './helpers/chromium.js';
import { bringUpDevice, native, serve, tempDir, waitFor } from './helpers/harness.js';
import { type DriverPair, transmit } from './helpers/mock-frontend.js';

const HDR = 12;

/** What the player shows now. */
interface Shown {
  ev: string;
  text: string;
  at: string;
  descs: number[];
  slots: number;
  hash: string;
}
const SHOWN = `(() => ({
  ev: document.getElementById("player-event").getAttribute("data-ev"),
  text: document.getElementById("player-event").textContent,
  at: document.getElementById("player-at").textContent,
  descs: [...document.querySelectorAll("#player-view rect.desc-touched")].map((r) => Number(r.getAttribute("data-desc"))),
  slots: document.querySelectorAll("#player-view path.slot-touched").length,
  hash: location.hash,
}))()`;

/**
 * Chooses the vring, pauses, and steps with the button (back, or `forward`) until `match`
 * holds (at most `max` steps).
 */
async function stepTo(
  page: Page,
  vring: number,
  match: (s: Shown) => boolean,
  forward = false,
  max = 200,
): Promise<Shown> {
  await page.evaluate(`(() => { const s = document.getElementById("player-vring"); s.value = "${vring}";
    s.dispatchEvent(new Event("change")); document.getElementById("player-pause").click(); })()`);
  const seen: string[] = [];
  for (let i = 0; i < max; i++) {
    const s = await page.evaluate<Shown>(SHOWN);
    if (match(s)) return s;
    seen.push(`${s.ev} ${s.text}`);
    await page.evaluate(`document.getElementById("player-${forward ? 'fwd' : 'back'}").click()`);
  }
  throw new Error(`no step back matched in ${max} steps; shown:\n${seen.slice(0, 12).join('\n')}`);
}

async function keepScreenshot(page: Page, name: string): Promise<void> {
  const dir = join(packageRoot, '.test-results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, name), await page.screenshot());
}

/** A device with the ring trace and HTTP on, brought up with `features`; `end` tears it all down. */
async function rig(features: bigint) {
  const tmp = tempDir();
  const trace = new RingTrace(join(tmp.dir, 'rings.jsonl'));
  const observe = { ringTrace: trace };
  const srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, 'native', undefined, undefined, observe);
  const { server, port } = await startHttp(srv.backend, '127.0.0.1', 0, observe);
  const d = await bringUpDevice(srv, features);
  const profile = tempDir('vun-chromium-');
  const held: { page?: Page } = {};
  return {
    ...d,
    trace,
    held,
    open: async () => (held.page = await chromiumPage(profile.dir, `http://127.0.0.1:${port}/rings.html`)),
    end: async () => {
      await held.page?.close();
      profile.cleanup();
      server.close();
      const closed = srv.sessionClosed();
      d.fe.close();
      await closed;
      srv.stop();
      trace.close();
      tmp.cleanup();
    },
  };
}

describe('ring page player (headless Chromium)', () => {
  it('split ring: steps back to an earlier receive chain and shows its descriptors, avail entry and indices', async () => {
    const r = await rig(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES, F.RING_F_EVENT_IDX));
    const { session, ram, pairs, trace } = r;
    try {
      const { receiveq, kicks } = pairs[0] as DriverPair;
      // Eight receive chains of two descriptors: heads 0, 2, 4, ...
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
      await waitFor(() => trace.history.since(0).events.some((e) => e.vring === 0 && e.event.ev === 'flush'));

      const page = await r.open();
      await page.waitFor('document.body.getAttribute("data-player-seq")', 15_000, 'the player to load the history');
      // Back from the newest event to the second receive chain (head 2).
      const s = await stepTo(page, 0, (x) => x.ev === 'chain' && /names head 2:/.test(x.text));
      expect(s.text).toContain(
        'avail entry 1 names head 2: a chain of 2 descriptors (1024 B writable + 1024 B writable), 0 B for the device to read, 2048 B for it to write',
      );
      expect(s.descs).toEqual([2, 3]); // the chain's two descriptors, highlighted
      expect(s.slots).toBe(1); // the one avail ring entry that named it
      expect(s.at).toContain('last_avail_idx 2');
      expect(s.at).toContain('avail.idx 8');
      const cite = await page.evaluate<string>('document.getElementById("player-cite").textContent');
      expect(cite).toContain('§2.7.5 The Virtqueue Descriptor Table');
      await keepScreenshot(page, 'ring-player-split.png');
      // One step forward: the next event, and the URL follows the place.
      await page.evaluate('document.getElementById("player-fwd").click()');
      const next = await page.evaluate<Shown>(SHOWN);
      expect(next.text).not.toBe(s.text);
      expect(Number(/seq=(\d+)/.exec(next.hash)?.[1])).toBeGreaterThan(Number(/seq=(\d+)/.exec(s.hash)?.[1]));
      // The used element of that chain: used ring slot 1, its descriptors again.
      const used = await stepTo(page, 0, (x) => x.ev === 'used' && /id 2 /.test(x.text), true);
      expect(used.text).toContain("used ring slot 1: id 2 (the chain's head), len 112");
      expect(used.descs).toEqual([2, 3]);
    } finally {
      await r.end();
    }
  }, 120_000);

  it('packed ring: steps back to the second buffer and highlights its two descriptor slots', async () => {
    const r = await rig(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES, F.F_RING_PACKED));
    const { fe, session, ram, pairs } = r;
    try {
      const kicks = pairs[0]?.kicks as { receiveq: number; transmitq: number };
      const receiveq = fe.packedDriver(0, ram);
      const transmitq = fe.packedDriver(1, ram);
      for (let i = 0; i < 8; i++) {
        const a = 0x100000 + i * 4096;
        receiveq.addChain([
          { addr: BigInt(a), len: 1024, write: true },
          { addr: BigInt(a + 1024), len: 1024, write: true },
        ]);
      }
      receiveq.publish();
      native.eventfdWrite(kicks.receiveq, 1n);
      await waitFor(() => session.vrings[0]?.started === true);
      for (let i = 0; i < 3; i++) {
        const a = 0x200000 + i * 4096;
        ram.bytes.fill(0, a, a + HDR);
        transmitq.addChain([{ addr: BigInt(a), len: HDR + 100, write: false }]);
      }
      transmitq.publish();
      native.eventfdWrite(kicks.transmitq, 1n);
      const got: number[] = [];
      await waitFor(() => (got.push(...receiveq.takeUsed().map((u) => u.id)), got.length === 3), 5000, 'looped');

      const page = await r.open();
      await page.waitFor('document.body.getAttribute("data-player-seq")', 15_000, 'the player to load the history');
      const s = await stepTo(page, 0, (x) => x.ev === 'chain' && /buffer id 1,/.test(x.text));
      expect(s.text).toContain('slot 2: buffer id 1, 2 descriptors marked available by the driver');
      expect(s.descs).toEqual([2, 3]);
      expect(s.slots).toBe(2); // the same two slots on the circle (one ring for both sides)
      expect(s.at).toContain('next avail 4');
      const cite = await page.evaluate<string>('document.getElementById("player-cite").textContent');
      expect(cite).toContain('§2.8.1 Driver and Device Ring Wrap Counters');
      await keepScreenshot(page, 'ring-player-packed.png');
    } finally {
      await r.end();
    }
  }, 120_000);

  it('without --trace-rings, says how to record a history', async () => {
    const srv = serve({ queuePairs: 1 }, { kind: 'null' }, 'native');
    const { server, port } = await startHttp(srv.backend, '127.0.0.1', 0, {});
    const profile = tempDir('vun-chromium-');
    try {
      const dom = await chromium(profile.dir, ['--dump-dom', `http://127.0.0.1:${port}/rings.html`]);
      expect(dom).toContain('no ring trace: start the backend with --trace-rings FILE');
    } finally {
      profile.cleanup();
      server.close();
      srv.stop();
    }
  }, 60_000);
});
