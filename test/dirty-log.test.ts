/**
 * The dirty page log (vhost-user.rst "Migration") on both data paths, driven as QEMU drives it
 * when a migration starts: SET_LOG_BASE with a memfd, SET_FEATURES adding VHOST_F_LOG_ALL and
 * SET_VRING_ADDR with VHOST_VRING_F_LOG while the rings run, then traffic, then GET_VRING_BASE.
 *
 * Known answer: the bits are exactly the pages the spec's pseudo-code names for every byte the
 * device wrote (receive buffers at their guest addresses, used rings at log_guest_addr).
 * Differential: the C++ path (marks cached per burst) and the TS reference (marked per write)
 * leave the same log bytes.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { featureMask, ProtocolFeature, VirtioFeature as F } from '../src/features.js';
import { encodeLogDescription, encodeU64, encodeVringAddr, encodeVringState } from '../src/vhost-user/codec.js';
import { statusOf } from '../src/metrics/http.js';
import { VRING_F_LOG } from '../src/vhost-user/session.js';
import type { Session } from '../src/vhost-user/session.js';
import {
  bringUpDevice,
  type DatapathKind,
  native,
  openFds,
  type Served,
  serve,
  servedPerTest,
  waitFor,
} from './helpers/harness.js';
import type { DriverPair, GuestRam } from './helpers/mock-frontend.js';

/** What each test serves, shut down after it. */
const t = servedPerTest();

const HDR = 12;
const NUM = 256;
const RXBUF = 0x100000; // receive buffers from 1 MiB on
// 3000 bytes each: not page-aligned, so most frames cross a page edge and their later page is
// written only by the frame's body, never by the header the device writes again.
const BUF = 3000;
const TXBUF = 0x180000;
const LOG_BYTES = 4096; // covers 128 MiB of guest memory
// Where each vring's used ring writes are logged: not the used ring's own address, so the test
// tells log_guest_addr from the ring's address (the spec allows any address the log covers).
const LOG_AT = [0x300000n, 0x310000n];
const BASE = featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES, F.RING_F_EVENT_IDX, F.NET_F_MRG_RXBUF);
const LOG_ALL = featureMask(F.VHOST_F_LOG_ALL);

/** A memfd log as QEMU makes one (vhost_log_alloc), mapped here to read it. */
function makeLog(bytes = LOG_BYTES): { fd: number; view: Uint8Array; close(): void } {
  const fd = native.memfdCreate('vhost-log', bytes);
  const id = native.mmapFd(fd, bytes, 0);
  return {
    fd,
    view: new Uint8Array(native.mappingBuffer(id)),
    close: () => {
      native.munmap(id);
      native.close(fd);
    },
  };
}

/** The spec's pseudo-code: page = addr / 4096; log[page / 8] |= 1 << page % 8. */
function expectedLog(ranges: [bigint, number][], bytes = LOG_BYTES): Uint8Array {
  const out = new Uint8Array(bytes);
  for (const [gpa, len] of ranges) {
    for (let page = gpa / 4096n; page <= (gpa + BigInt(len) - 1n) / 4096n; page++)
      out[Number(page / 8n)] = (out[Number(page / 8n)] as number) | (1 << Number(page % 8n));
  }
  return out;
}

const pages = (log: Uint8Array): number[] => {
  const out: number[] = [];
  log.forEach((b, i) => {
    for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) out.push(i * 8 + bit);
  });
  return out;
};

function vringAddr(index: number, ram: GuestRam, log: bigint | undefined): Buffer {
  const descOff = BigInt(index) * 0x10000n;
  return encodeVringAddr({
    index,
    flags: log === undefined ? 0 : VRING_F_LOG,
    descUserAddr: ram.region.userAddr + descOff,
    availUserAddr: ram.region.userAddr + descOff + BigInt(NUM * 16),
    usedUserAddr: ram.region.userAddr + descOff + 0x8000n,
    logGuestAddr: log ?? 0n,
  });
}

async function postRx(s: Session, p: DriverPair, count: number): Promise<void> {
  for (let i = 0; i < count; i++)
    p.receiveq.offer(p.receiveq.addChain([{ addr: BigInt(RXBUF + i * BUF), len: BUF, write: true }]));
  p.receiveq.publish();
  native.eventfdWrite(p.kicks.receiveq, 1n);
  await waitFor(() => s.vrings[0]?.started === true, 2000, 'receiveq started');
}

function send(ram: GuestRam, p: DriverPair, frames: Buffer[], from: number): void {
  frames.forEach((f, k) => {
    const at = TXBUF + (from + k) * 0x1000;
    ram.bytes.fill(0, at, at + HDR);
    ram.bytes.set(f, at + HDR);
    p.transmitq.offer(p.transmitq.addChain([{ addr: BigInt(at), len: HDR + f.length, write: false }]));
  });
  p.transmitq.publish();
  native.eventfdWrite(p.kicks.transmitq, 1n);
}

const ok = async (v: Promise<bigint>, what: string) => expect(await v, what).toBe(0n);

/** Logs left by each data path in the scenario, for the differential check. */
const logs = new Map<DatapathKind, Uint8Array>();
afterAll(() => logs.clear());

describe.each(['native', 'ts'] as const)('%s data path', (kind) => {
  it('marks every page the device writes once LOG_ALL is on, and nothing before or after', async () => {
    t.srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, kind);
    const d = await bringUpDevice(t.srv, BASE);
    t.fe = d.fe;
    const { session, ram } = d;
    const p = d.pairs[0] as DriverPair;
    const log = makeLog();
    try {
      await postRx(session, p, 32);
      // Traffic before logging: nothing is marked, even with a log area set.
      expect(
        await t.fe.u64('SET_LOG_BASE', encodeLogDescription({ mmapSize: BigInt(LOG_BYTES), mmapOffset: 0n }), [log.fd]),
      ).toBe(0n);
      const before = [Buffer.alloc(100, 1), Buffer.alloc(200, 2)];
      send(ram, p, before, 0);
      await waitFor(() => p.receiveq.usedIdx() === 2, 5000, 'frames before logging');
      expect(pages(log.view)).toEqual([]);
      expect(session.view().dirtyLog).toEqual({ bytes: LOG_BYTES, logging: false });

      // QEMU's vhost_dev_set_log(true): SET_FEATURES with LOG_ALL, then SET_VRING_ADDR with
      // VHOST_VRING_F_LOG for each vring, while the rings run.
      await ok(t.fe.acked('SET_FEATURES', encodeU64(BASE | LOG_ALL)), 'SET_FEATURES');
      for (const i of [0, 1]) await ok(t.fe.acked('SET_VRING_ADDR', vringAddr(i, ram, LOG_AT[i])), 'SET_VRING_ADDR');
      expect(session.view().dirtyLog?.logging).toBe(true);
      expect(statusOf((t.srv as Served).backend).dirtyLog).toEqual({ bytes: LOG_BYTES, logging: true });
      expect(session.vrings[0]?.started && session.vrings[1]?.started).toBe(true);

      // Frames of many sizes, most crossing a page edge inside their buffer.
      const during = Array.from({ length: 12 }, (_, k) => Buffer.alloc(60 + k * 240, 0x30 + k));
      send(ram, p, during, 2);
      await waitFor(() => p.receiveq.usedIdx() === 14, 5000, 'frames while logging');
      // GET_VRING_BASE stops the rings; the front-end's last log sync follows it.
      for (const index of [0, 1]) await t.fe.request('GET_VRING_BASE', encodeVringState({ index, num: 0 }));

      const written: [bigint, number][] = [];
      during.forEach((f, k) => {
        const u = p.receiveq.usedElem(2 + k);
        written.push([BigInt(RXBUF + u.id * BUF), HDR + f.length]);
      });
      // Used rings: entries, idx and avail_event (EVENT_IDX), logged at log_guest_addr + offset.
      for (const i of [0, 1]) written.push([LOG_AT[i] as bigint, 6 + 8 * NUM]);
      const want = expectedLog(written);
      // The exact pages: no receive buffer page missed, no used ring page at its own address,
      // nothing for the transmit buffers (the device only reads them).
      const got = new Uint8Array(log.view);
      const usedPages = [0x300, 0x310];
      expect(pages(got).filter((pg) => !usedPages.includes(pg))).toEqual(
        pages(want).filter((pg) => !usedPages.includes(pg)),
      );
      expect(pages(got).filter((pg) => usedPages.includes(pg))).toEqual(usedPages);
      expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
      logs.set(kind, got);
    } finally {
      log.close();
    }
  });

  it('LOG_ALL off again: the log is left alone; a new SET_LOG_BASE replaces the area', async () => {
    t.srv = serve({ queuePairs: 1 }, { kind: 'loopback' }, kind);
    const d = await bringUpDevice(t.srv, BASE | LOG_ALL);
    t.fe = d.fe;
    const { session, ram } = d;
    const p = d.pairs[0] as DriverPair;
    const first = makeLog();
    const second = makeLog();
    try {
      const desc = encodeLogDescription({ mmapSize: BigInt(LOG_BYTES), mmapOffset: 0n });
      expect(await t.fe.u64('SET_LOG_BASE', desc, [first.fd])).toBe(0n);
      await postRx(session, p, 8);
      send(ram, p, [Buffer.alloc(80, 9)], 0);
      await waitFor(() => p.receiveq.usedIdx() === 1, 5000, 'first frame');
      await waitFor(() => pages(first.view).length > 0, 2000, 'pages marked in the first log');
      // QEMU resizes the log by sending SET_LOG_BASE again: the old area is not written after.
      expect(await t.fe.u64('SET_LOG_BASE', desc, [second.fd])).toBe(0n);
      first.view.fill(0);
      send(ram, p, [Buffer.alloc(80, 10)], 1);
      await waitFor(() => p.receiveq.usedIdx() === 2, 5000, 'second frame');
      await waitFor(() => pages(second.view).length > 0, 2000, 'pages marked in the second log');
      expect(pages(first.view)).toEqual([]);
      // vhost_dev_set_log(false): LOG_ALL off; nothing is marked any more.
      await ok(t.fe.acked('SET_FEATURES', encodeU64(BASE)), 'SET_FEATURES');
      second.view.fill(0);
      send(ram, p, [Buffer.alloc(80, 11)], 2);
      await waitFor(() => p.receiveq.usedIdx() === 3, 5000, 'third frame');
      for (const index of [0, 1]) await t.fe.request('GET_VRING_BASE', encodeVringState({ index, num: 0 }));
      expect(pages(second.view)).toEqual([]);
    } finally {
      first.close();
      second.close();
    }
  });
});

describe('the dirty log (both paths)', () => {
  it('C++ and TS leave the same log bytes for the same traffic', () => {
    const a = logs.get('native');
    const b = logs.get('ts');
    expect(a && b, 'both scenarios ran').toBeTruthy();
    expect(Buffer.from(a as Uint8Array).equals(Buffer.from(b as Uint8Array))).toBe(true);
  });

  it('a log outside its file closes the connection with a coded error, fds closed', async () => {
    t.srv = serve({ queuePairs: 1 }, { kind: 'loopback' });
    const d = await bringUpDevice(t.srv, BASE);
    t.fe = d.fe;
    const fdsBefore = openFds();
    const log = native.memfdCreate('vhost-log', 4096);
    const closed = t.srv.sessionClosed();
    t.fe.send(6 /* SET_LOG_BASE */, encodeLogDescription({ mmapSize: 8192n, mmapOffset: 0n }), { fds: [log] });
    const reason = await closed;
    expect((reason as { code?: string } | undefined)?.code).toBe('VUN_SESSION_MAP_FAILED');
    native.close(log);
    await t.fe.expectClosed();
    // The session's fds (kick, call, memory) are gone with it; none of the log's stayed open.
    expect(openFds()).toBeLessThan(fdsBefore);
  });

  it('offers what QEMU asks for before it allows a migration (LOG_SHMFD, VHOST_F_LOG_ALL)', async () => {
    t.srv = serve({ queuePairs: 1 }, { kind: 'null' });
    const next = t.srv.nextSession();
    t.fe = t.srv.connect();
    await next;
    const { features, protocolFeatures } = await t.fe.handshake();
    expect(features & LOG_ALL).toBe(LOG_ALL);
    expect(protocolFeatures & featureMask(ProtocolFeature.LOG_SHMFD)).not.toBe(0n);
  });
});
