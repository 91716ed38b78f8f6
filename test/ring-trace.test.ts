/**
 * The ring trace on both data paths (the C++ one through its observation rings): avail reads, chains with their descriptors (indirect
 * tables nested), used elements, flushes, and notification decisions with the EVENT_IDX
 * arithmetic; a driver violation shows as a chain with its error; memory stays bounded.
 */
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { VhostUserNetBackend } from '../src/backend.js';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { silentLogger } from '../src/log.js';
import type { Logger } from 'pino';
import type { DataPlaneEvents } from '../src/net/data-plane.js';
import { NativeDataPlane } from '../src/net/native-data-plane.js';
import { TsDataPlane } from '../src/net/ts-data-plane.js';
import type { NativeBinding } from '../src/native.js';
import { RingTrace } from '../src/trace/ring-trace.js';
import type { Session } from '../src/vhost-user/session.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { type DriverPair, MockFrontend } from './helpers/mock-frontend.js';

const loopback = { spec: { kind: 'loopback' as const }, fds: [], close: () => {} };
const planes = {
  ts: (n: NativeBinding, l: Logger, events: DataPlaneEvents, trace: RingTrace) =>
    new TsDataPlane(n, { queuePairs: 1, host: loopback, observe: { ringTrace: trace } }, l, events),
  native: (n: NativeBinding, l: Logger, events: DataPlaneEvents, trace: RingTrace) =>
    new NativeDataPlane(n, { queuePairs: 1, host: loopback, observe: { ringTrace: trace } }, l, events),
};

describe.each(Object.keys(planes) as (keyof typeof planes)[])('ring trace (%s data path)', (datapath) => {
  it('records every step of a loopback exchange, with the numbers behind each decision', async () => {
    const sink = new PassThrough();
    let text = '';
    sink.on('data', (d: Buffer) => (text += d.toString()));
    const trace = new RingTrace(sink);
    const tmp = tempDir();
    const path = `${tmp.dir}/s.sock`;
    const backend = new VhostUserNetBackend(
      { socketPath: path, client: false, socketMode: 0o600, queuePairs: 1, reconnectMinMs: 20, reconnectMaxMs: 200 },
      silentLogger(),
      (n, l, events) => planes[datapath](n, l, events, trace),
    );
    backend.start();
    const next = new Promise<Session>((r) => backend.once('session', r));
    const fe = MockFrontend.connect(native, path);
    const session = await next;
    await fe.handshake();
    const f = featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES, F.RING_F_EVENT_IDX, F.RING_F_INDIRECT_DESC);
    const { ram, pairs } = await fe.bringUp(f, 1);
    const { receiveq, transmitq, kicks } = pairs[0] as DriverPair;
    for (let i = 0; i < 4; i++)
      receiveq.offer(receiveq.addChain([{ addr: BigInt(0x100000 + i * 2048), len: 2048, write: true }]));
    receiveq.publish();
    native.eventfdWrite(kicks.receiveq, 1n);
    await waitFor(() => session.vrings[0]?.started === true);
    ram.bytes.fill(0, 0x200000, 0x200000 + 12);
    // One frame through an indirect table: header and payload in two indirect descriptors.
    transmitq.offer(
      transmitq.addIndirect([
        { addr: 0x200000n, len: 12, write: false },
        { addr: 0x200100n, len: 60, write: false },
      ]),
    );
    transmitq.publish();
    native.eventfdWrite(kicks.transmitq, 1n);
    await waitFor(() => receiveq.usedIdx() === 1, 5000, 'frame looped back');
    // Then a descriptor loop on the transmitq.
    transmitq.rawDesc(9, 0x200000n, 12, 1, 9);
    transmitq.offer(9);
    transmitq.publish();
    native.eventfdWrite(kicks.transmitq, 1n);
    await waitFor(() => session.vrings[1]?.broken === true, 5000, 'transmitq broken');
    await waitFor(() => text.includes('DESC_LOOP'), 5000, 'the broken chain in the trace');
    const recs = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);

    const txChain = recs.find((r) => r.vring === 1 && r.ev === 'chain' && !r.error) as Record<string, unknown>;
    expect(txChain).toMatchObject({ outLen: 72, inLen: 0 });
    expect(txChain.descs).toEqual([
      {
        addr: expect.stringMatching(/^0x/),
        len: 32,
        flags: ['INDIRECT'],
        indirect: [
          { addr: '0x200000', len: 12, flags: ['NEXT'], next: 1 },
          { addr: '0x200100', len: 60, flags: [] },
        ],
      },
    ]);
    expect(recs.find((r) => r.vring === 1 && r.ev === 'avail')).toMatchObject({ availIdx: 1, lastAvailIdx: 0, new: 1 });
    expect(recs.find((r) => r.vring === 1 && r.ev === 'used')).toMatchObject({ slot: 0, len: 0 });
    expect(recs.find((r) => r.vring === 0 && r.ev === 'used')).toMatchObject({ slot: 0, id: 0, len: 72 });
    expect(recs.find((r) => r.vring === 0 && r.ev === 'flush')).toMatchObject({ usedIdx: 1, count: 1 });
    const notify = recs.filter((r) => r.ev === 'notify');
    expect(notify.length).toBeGreaterThan(0);
    for (const n of notify) {
      expect(n.eventIdx).toBe(true);
      expect(String(n.why)).toMatch(/first notification|vring_need_event: \(u16\)/);
      expect(['sent', 'suppressed']).toContain(n.decision);
    }
    expect(recs.find((r) => r.vring === 1 && r.ev === 'chain' && r.error)).toMatchObject({
      head: 9,
      error: 'DESC_LOOP',
    });
    expect(recs.some((r) => r.ev === 'kicks' && String(r.how).startsWith('avail_event ='))).toBe(true);

    const closed = new Promise((r) => backend.once('sessionClosed', r));
    fe.close();
    await closed;
    backend.stop();
    tmp.cleanup();
  });
});

describe('ring trace output', () => {
  it('drops and counts events when the output falls behind', () => {
    const stuck = new Writable({ write: () => {} }); // never calls back: nothing drains
    const t = new RingTrace(stuck, 1000);
    for (let i = 0; i < 200; i++) t.record(0, { ev: 'flush', usedIdx: i, count: 1 });
    expect(t.dropped).toBeGreaterThan(150);
    expect(t.dropped).toBeLessThan(200);
  });
});
