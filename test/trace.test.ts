/**
 * The protocol trace against a scripted session of the mock front-end: every record kind,
 * every field, replies paired with requests, state changes attached; then `explain` on it.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { featureMask, hex, VirtioFeature } from '../src/features.js';
import { packageRoot } from '../src/native.js';
import { explain } from '../src/trace/explain.js';
import { MessageTrace, type TraceRecord } from '../src/trace/message-trace.js';
import { encodeU64, encodeVringState, Request } from '../src/vhost-user/codec.js';
import { describeRequest } from '../src/trace/decode.js';
import { offeredFeatures } from '../src/vhost-user/session.js';
import { native, serve, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

async function scriptedSession(): Promise<TraceRecord[]> {
  const sink = new PassThrough();
  let text = '';
  sink.on('data', (d: Buffer) => (text += d.toString()));
  const trace = new MessageTrace(sink);
  const srv = serve({ queuePairs: 1, trace });
  const next = srv.nextSession();
  const fe = srv.connect();
  const session = await next;
  await fe.handshake();
  const f = featureMask(VirtioFeature.F_VERSION_1, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
  await fe.acked('SET_FEATURES', encodeU64(f));
  const ram = fe.guestRam(1 << 20, 0x4000_0000n, 0x7f12_3400_0000n);
  await fe.acked('SET_MEM_TABLE', MockFrontend.memTable([ram.region]), [ram.fd]);
  // A driver at position 5: avail->idx and used->idx say so too (the device resumes from
  // used->idx when SET_VRING_BASE disagrees with it).
  const dv = new DataView(ram.bytes.buffer, ram.bytes.byteOffset);
  dv.setUint16(256 * 16 + 2, 5, true);
  dv.setUint16(0x8000 + 2, 5, true);
  const { kick } = await fe.setupVring(0, ram, { base: 5 });
  await fe.acked('SET_VRING_ENABLE', MockFrontend.state({ index: 0, num: 1 }));
  native.eventfdWrite(kick, 1n);
  await waitFor(() => session.vrings[0]?.started === true);
  await fe.request('GET_VRING_BASE', MockFrontend.state({ index: 0, num: 0 }));
  fe.send(Request.SET_VRING_NUM, MockFrontend.state({ index: 9, num: 256 })); // out of range: closes
  await fe.expectClosed();
  await srv.sessionClosed();
  fe.close();
  srv.stop();
  return text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as TraceRecord);
}

describe('protocol trace', () => {
  it('records every message both ways, decoded, with replies paired and changes attached', async () => {
    const recs = await scriptedSession();
    const reqs = (name: string) => recs.filter((r) => r.kind === 'request' && r.request === name);
    const replyOf = (r: TraceRecord) => recs.find((x) => x.kind === 'reply' && x.replyTo === r.seq);

    expect(recs[0]).toMatchObject({ kind: 'session', what: 'connected', session: 1, seq: 1 });
    expect(recs.map((r) => r.seq)).toEqual(recs.map((_r, i) => i + 1));
    for (const r of recs) {
      expect(typeof r.t).toBe('number');
      expect(Date.parse(r.time)).not.toBeNaN();
    }

    const gf = reqs('GET_FEATURES')[0] as TraceRecord;
    expect(gf).toMatchObject({
      dir: 'front-end->backend',
      requestNumber: 1,
      flags: { raw: '0x1', version: 1, reply: false, needReply: false },
      size: 0,
      fds: 0,
      payload: {},
    });
    expect(replyOf(gf)).toMatchObject({
      dir: 'backend->front-end',
      request: 'GET_FEATURES',
      ack: false,
      flags: { raw: '0x5', version: 1, reply: true, needReply: false },
      size: 8,
      payload: { features: hex(offeredFeatures(1)) },
    });
    expect((replyOf(gf)?.payload as { names: string[] }).names).toContain('F_VERSION_1');

    const spf = reqs('SET_PROTOCOL_FEATURES')[0] as TraceRecord;
    expect((spf.payload as { names: string[] }).names).toContain('REPLY_ACK');
    expect(spf.changes?.[0]?.what).toBe('protocol features acked');

    const sf = reqs('SET_FEATURES')[0] as TraceRecord;
    expect(sf.flags).toMatchObject({ needReply: true, raw: '0x9' });
    expect(sf.payload).toEqual({ features: '0x140000000', names: ['VHOST_USER_F_PROTOCOL_FEATURES', 'F_VERSION_1'] });
    expect(replyOf(sf)).toMatchObject({ ack: true, payload: { ack: '0', ok: true } });

    const mt = reqs('SET_MEM_TABLE')[0] as TraceRecord;
    expect(mt.fds).toBe(1);
    expect(mt.payload).toEqual({
      nregions: 1,
      regions: [{ guestAddr: '0x40000000', size: '0x100000', userAddr: '0x7f1234000000', mmapOffset: '0x0' }],
    });
    expect(mt.changes?.[0]).toMatchObject({ what: 'memory table set', regions: 1 });

    expect(reqs('SET_VRING_NUM')[0]?.payload).toEqual({ index: 0, size: 256 });
    expect(reqs('SET_VRING_BASE')[0]?.payload).toEqual({ index: 0, nextAvailIdx: 5 });
    expect(reqs('SET_VRING_ADDR')[0]?.payload).toMatchObject({ index: 0, log: false, descUserAddr: '0x7f1234000000' });
    expect(reqs('SET_VRING_KICK')[0]).toMatchObject({ fds: 1, payload: { index: 0, noFd: false, raw: '0x0' } });
    expect(reqs('SET_VRING_ENABLE')[0]?.payload).toEqual({ index: 0, enable: 1 });

    const started = recs.find((r) => r.kind === 'event' && r.what === 'vring started');
    expect(started?.changes?.[0]).toMatchObject({ vring: 0, reason: 'first kick' });

    const gvb = reqs('GET_VRING_BASE')[0] as TraceRecord;
    expect(gvb.changes?.[0]).toMatchObject({ what: 'vring stopped', vring: 0, lastAvailIdx: 5 });
    expect(replyOf(gvb)?.payload).toEqual({ index: 0, nextAvailIdx: 5 });

    const bad = reqs('SET_VRING_NUM')[1] as TraceRecord;
    expect(bad.error).toMatchObject({ code: 'VUN_PROTO_VRING_INDEX' });
    expect(recs.at(-1)).toMatchObject({ kind: 'session', what: 'closed' });
  });

  it('explain prints a timeline that cites the spec at every step', async () => {
    const recs = await scriptedSession();
    const lines = explain(recs);
    const text = lines.join('\n');
    expect(text).toMatch(/-> GET_FEATURES/);
    expect(text).toMatch(/<- GET_FEATURES reply/);
    expect(text).toMatch(/SET_VRING_KICK .*\n.*\[vhost-user.rst "Ring states"/);
    expect(text).toMatch(/SET_VRING_ADDR .*\n.*virtio 1\.2 §2\.7/);
    expect(text).toMatch(/REPLY_ACK\)[^\n]*\n.*\[vhost-user.rst "REPLY_ACK"/);
    expect(text).toMatch(/\*\* vring started \(vring 0\): first kick\n.*"Ring states"/);
    expect(text).toMatch(/!! VUN_PROTO_VRING_INDEX/);
    // Every request line is followed by its explanation with a citation.
    lines.forEach((l, i) => {
      if (/^\+\s*[\d.]+s {2}-> /.test(l)) expect(lines[i + 1], l).toMatch(/\[.*(vhost-user\.rst|virtio).*\]/);
    });
    // The command line does the same from a file.
    const tmp = tempDir();
    const file = join(tmp.dir, 'trace.jsonl');
    writeFileSync(file, recs.map((r) => JSON.stringify(r)).join('\n'));
    const r = spawnSync(process.execPath, [join(packageRoot, 'bin', 'vhost-user-net.js'), 'explain', file], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${text}\n`);
    tmp.cleanup();
  });
});

describe('vring base decoding', () => {
  it('names the positions of a packed base (two positions with wrap counters) and leaves a split one alone', () => {
    const base = (num: number) => describeRequest(Request.SET_VRING_BASE, encodeVringState({ index: 0, num }));
    // QEMU's packed base: avail 0 wrap 1 in the low half, used 0 wrap 1 in the high half.
    expect(base(0x80008000)).toEqual({
      index: 0,
      nextAvailIdx: 0x80008000,
      hex: '0x80008000',
      packed: 'avail 0 wrap 1, used 0 wrap 1',
    });
    expect(base(0x0005_8003)).toMatchObject({ packed: 'avail 3 wrap 1, used 5 wrap 0' });
    // Bit 15 alone: a packed base without the used half, or a split index past 32767.
    expect(base(0x8000)).toEqual({ index: 0, nextAvailIdx: 0x8000, ifPacked: 'avail 0 wrap 1' });
    expect(base(5)).toEqual({ index: 0, nextAvailIdx: 5 });
  });
});
