/**
 * The ring narrator and `explain` on ring traces, against known answers written from the spec:
 * which avail entries, descriptors and used slots each event touched, the indices after it,
 * and the section cited; split and packed. Then `explain` on a real trace file (TS data path,
 * a loopback exchange) through the CLI, with --vring.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RING_PAGE } from '../src/metrics/ring-page.js';
import { packageRoot } from '../src/native.js';
import { explainRings } from '../src/trace/explain.js';
import { narrateTrace } from '../src/trace/ring-narrator.js';
import { RingHistory } from '../src/trace/ring-trace.js';
import type { RingEvent } from '../src/virtio/ring-events.js';
import { tempDir } from './helpers/harness.js';

type Rec = { t: number; vring: number } & RingEvent;
const w = (flags: string[], next?: number) => ({
  addr: '0x1000',
  len: 1024,
  flags,
  ...(next !== undefined ? { next } : {}),
});

/** A split receiveq: two chains of two descriptors offered, one frame filled, published, notified. */
const SPLIT: Rec[] = [
  { t: 1, vring: 0, ev: 'avail', availIdx: 2, lastAvailIdx: 0, new: 2 },
  { t: 2, vring: 0, ev: 'chain', head: 4, descs: [w(['NEXT', 'WRITE'], 7), w(['WRITE'])], outLen: 0, inLen: 2048 },
  { t: 3, vring: 0, ev: 'used', slot: 0, id: 4, len: 112 },
  { t: 4, vring: 0, ev: 'flush', usedIdx: 1, count: 1 },
  {
    t: 5,
    vring: 0,
    ev: 'notify',
    decision: 'sent',
    eventIdx: true,
    why: 'vring_need_event: (u16)(1 - 0 - 1) = 0 < (u16)(1 - 0) = 1',
    usedEvent: 0,
    newUsedIdx: 1,
    oldUsedIdx: 0,
  },
];

/** A packed receiveq of 4 slots: a buffer of two descriptors at slots 2-3 (lap 1), then used at slot 2. */
const PACKED: Rec[] = [
  {
    t: 1,
    vring: 0,
    ev: 'chain',
    head: 9,
    slot: 2,
    descs: [
      { ...w(['NEXT', 'WRITE', 'AVAIL']), id: 9 },
      { ...w(['WRITE', 'AVAIL']), id: 9 },
    ],
    outLen: 0,
    inLen: 2048,
  },
  { t: 2, vring: 0, ev: 'used', slot: 2, id: 9, len: 112 },
  { t: 3, vring: 0, ev: 'flush', usedIdx: 0x8000 | 0, count: 1 },
];

describe('ring narrator (known answers)', () => {
  it('split: the avail entries, descriptors and used slots each step touched, and the indices after it', () => {
    const n = narrateTrace(SPLIT);
    expect(n.map((e) => e.touched)).toEqual([
      { avail: [0, 1] }, // the two new entries
      { avail: [0], desc: [4, 7] }, // entry 0 named head 4, NEXT led to 7
      { used: [0], desc: [4, 7] }, // the used element gives the whole chain back
      { used: [0] }, // published: used->idx 0 -> 1
      {},
    ]);
    expect(n.map((e) => [e.at.availIdx, e.at.lastAvailIdx, e.at.usedIdx, e.at.inFlight])).toEqual([
      [2, 0, undefined, 0],
      [2, 1, undefined, 1],
      [2, 1, undefined, 0],
      [2, 1, 1, 0],
      [2, 1, 1, 0],
    ]);
    expect(n[1]?.say).toBe(
      'avail entry 0 names head 4: a chain of 2 descriptors (1024 B writable + 1024 B writable), 0 B for the device to read, 2048 B for it to write',
    );
    expect(n[2]?.say).toBe("used ring slot 0: id 4 (the chain's head), len 112 (bytes the device wrote into it)");
    expect(n.map((e) => /§2\.7\.\d+/.exec(e.cite)?.[0])).toEqual(['§2.7.6', '§2.7.5', '§2.7.8', '§2.7.8', '§2.7.7']);
    expect(n[4]?.cite).toContain('VIRTIO_F_EVENT_IDX');
  });

  it('packed: a buffer covers consecutive slots; its used descriptor stands for the whole list', () => {
    const n = narrateTrace(PACKED);
    expect(n[0]?.touched).toEqual({ desc: [2, 3] });
    expect(n[0]?.say).toContain('slot 2: buffer id 9, 2 descriptors marked available by the driver');
    expect(n[0]?.at).toMatchObject({ layout: 'packed', lastAvailIdx: 4 | 0x8000, inFlight: 1 });
    expect(n[1]?.touched).toEqual({ desc: [2, 3] });
    expect(n[1]?.say).toContain("it stands for the buffer's whole list");
    expect(n[1]?.cite).toContain('§2.8.6');
    expect(n[2]?.say).toContain('next used at 0 wrap 1');
    expect(n[2]?.at).toMatchObject({ usedIdx: 0x8000, inFlight: 0 });
  });

  it('a refused chain says the queue stops; a fault says which rule lied', () => {
    const n = narrateTrace([
      { t: 0, vring: 1, ev: 'avail', availIdx: 1, lastAvailIdx: 0, new: 1 },
      { t: 1, vring: 1, ev: 'chain', head: 9, descs: [w(['NEXT'], 9)], outLen: 0, inLen: 0, error: 'DESC_LOOP' },
      { t: 2, vring: 1, ev: 'fault', rule: 'liar', do: 'used-len', event: 3, field: 'len', old: 60, new: 9000 },
    ]);
    expect(n[1]?.say).toBe(
      'chain at head 9 refused: DESC_LOOP; the queue stops (a driver violation), the others go on',
    );
    expect(n[1]?.at.lastAvailIdx).toBe(0); // not consumed
    expect(n[2]?.say).toBe('fault plan rule liar (used-len) lied here: len 60 -> 9000');
  });

  it('the history keeps the newest events in order and serves them after a seq', () => {
    const h = new RingHistory(5);
    for (let i = 0; i < 12; i++) h.add(0, { ev: 'avail', availIdx: i, lastAvailIdx: 0, new: i }, i);
    const all = h.since(0);
    expect(all.oldest).toBe(8);
    expect(all.events.map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
    expect(h.since(10).events.map((e) => e.seq)).toEqual([11, 12]);
    expect(h.since(12).events).toEqual([]);
    expect(h.since(0, 2).events.map((e) => e.seq)).toEqual([8, 9]);
  });

  it('the ring page script parses', () => {
    const js = RING_PAGE.slice(RING_PAGE.indexOf('<script>') + 8, RING_PAGE.indexOf('</script>'));
    expect(() => new Function(js)).not.toThrow();
  });
});

describe('explain on a ring trace', () => {
  it('prints the timeline with the spec section at each step, one vring with --vring', () => {
    const lines = explainRings(SPLIT);
    expect(lines[0]).toMatch(/^\+\s+0\.001s  vring 0 receiveq0\s+avail\s+read avail->idx = 2: 2 new entries/);
    expect(lines[1]).toBe(
      '             [virtio 1.2 §2.7.6 The Virtqueue Available Ring ("idx field indicates where the driver would put the next descriptor entry")]',
    );
    expect(lines).toHaveLength(SPLIT.length * 2);

    const tmp = tempDir();
    const file = join(tmp.dir, 'rings.jsonl');
    const both = [...SPLIT, { t: 6, vring: 1, ev: 'avail', availIdx: 1, lastAvailIdx: 0, new: 1 } as Rec];
    writeFileSync(file, `${both.map((r) => JSON.stringify(r)).join('\n')}\n`);
    const bin = join(packageRoot, 'bin', 'vhost-user-net.js');
    const all = spawnSync(process.execPath, [bin, 'explain', file], { encoding: 'utf8' });
    expect(all.status).toBe(0);
    expect(all.stdout).toContain('vring 1 transmitq0');
    const one = spawnSync(process.execPath, [bin, 'explain', file, '--vring', '1'], { encoding: 'utf8' });
    expect(one.status).toBe(0);
    expect(one.stdout).toContain('vring 1 transmitq0');
    expect(one.stdout).not.toContain('vring 0 receiveq0');
    const bad = spawnSync(process.execPath, [bin, 'explain', file, '--vring', 'x'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--vring takes a vring index/);
    expect(readFileSync(file, 'utf8')).toContain('"ev":"avail"');
    tmp.cleanup();
  });
});
