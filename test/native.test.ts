/** The addon on its own: fds over SCM_RIGHTS, mappings, eventfds, cleanup at worker exit. */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { call, nativeAddonPath } from '../src/native.js';
import { HostIoError } from '../src/errors.js';
import { native, openFds } from './helpers/harness.js';

describe('recvMsg/sendMsg', () => {
  it('delivers fds with the first byte and reads no further than asked', () => {
    const [a, b] = native.socketPair();
    const e1 = native.eventfdCreate(5);
    native.sendMsg(a, Buffer.from('0123456789abcdefXY'), [e1]);
    native.sendMsg(a, Buffer.from('second'), []);
    const buf = Buffer.alloc(64);
    const r1 = native.recvMsg(b, buf, 0, 12, 8);
    expect(r1.bytes).toBe(12);
    expect(r1.fds.length).toBe(1);
    expect(buf.subarray(0, 12).toString()).toBe('0123456789ab');
    // The received fd is a working duplicate of e1.
    expect(native.eventfdRead(r1.fds[0] as number)).toBe(5n);
    const r2 = native.recvMsg(b, buf, 12, 6, 0);
    expect(r2.bytes).toBe(6);
    expect(buf.subarray(12, 18).toString()).toBe('cdefXY');
    const r3 = native.recvMsg(b, buf, 0, 64, 0);
    expect(buf.subarray(0, r3.bytes).toString()).toBe('second');
    expect(native.recvMsg(b, buf, 0, 64, 0).bytes).toBe(-1);
    for (const fd of [a, b, e1, ...r1.fds]) native.close(fd);
  });

  it('closes fds beyond the maximum and reports them', () => {
    const before = openFds();
    const [a, b] = native.socketPair();
    const fds = Array.from({ length: 5 }, () => native.eventfdCreate(0));
    native.sendMsg(a, Buffer.from('x'), fds);
    const r = native.recvMsg(b, Buffer.alloc(1), 0, 1, 2);
    expect(r.fds.length).toBe(2);
    expect(r.extraFds).toBe(3);
    for (const fd of [a, b, ...fds, ...r.fds]) native.close(fd);
    expect(openFds()).toBe(before);
  });

  it('reports a closed peer as 0 bytes', () => {
    const [a, b] = native.socketPair();
    native.close(a);
    expect(native.recvMsg(b, Buffer.alloc(4), 0, 4, 0).bytes).toBe(0);
    native.close(b);
  });

  it('refuses to close an fd it does not own', () => {
    expect(() => call('close', () => native.close(0))).toThrow(HostIoError);
    try {
      native.close(0);
    } catch (e) {
      expect((e as { code: string }).code).toBe('EBADF');
    }
  });
});

describe('mappings', () => {
  it('maps at an unaligned offset and detaches views on unmap', () => {
    const fd = native.memfdCreate('t', 3 * 4096);
    const whole = native.mmapFd(fd, 3 * 4096, 0);
    const wv = new Uint8Array(native.mappingBuffer(whole));
    wv[4096 + 100] = 0x5a;
    const part = native.mmapFd(fd, 4096, 4096 + 100);
    const ab = native.mappingBuffer(part);
    expect(ab.byteLength).toBe(4096);
    expect(new Uint8Array(ab)[0]).toBe(0x5a);
    native.munmap(part);
    expect(ab.byteLength).toBe(0);
    native.munmap(whole);
    native.close(fd);
    expect(native.mappingCount()).toBe(0);
  });

  it('refuses a range outside the file with EINVAL', () => {
    const fd = native.memfdCreate('t', 8192);
    expect(() => native.mmapFd(fd, 4096, 8192)).toThrow(/outside file/);
    expect(() => native.mmapFd(fd, 0, 0)).toThrow(/zero-size/);
    native.close(fd);
  });
});

describe('views of mappings over 4 GiB', () => {
  // Found by test/isolation.test.ts: a whole view of an 8 GiB region made node abort (a second
  // exception thrown over V8's pending one). A front-end's large region reached it on the TS path.
  it('a whole view is refused with an exception, a window of it works', () => {
    const fd = native.memfdCreate('big', 2 ** 33);
    const id = native.mmapFd(fd, 2 ** 33, 0);
    native.close(fd);
    try {
      expect(() => native.mappingBuffer(id)).toThrow(/larger than|cannot view/);
      const w = new Uint8Array(native.mappingBuffer(id, 2 ** 32 + 4096, 4096));
      w[0] = 7;
      expect(new Uint8Array(native.mappingBuffer(id, 2 ** 32 + 4096, 1))[0]).toBe(7);
      expect(native.mappingU16(id, 2 ** 32 + 4096)).toBe(7); // a ring index read without a view
      expect(() => native.mappingU16(id, 2 ** 33 - 1)).toThrow(/outside/);
      expect(() => native.mappingBuffer(id, 2 ** 33 - 1, 2)).toThrow(/outside the mapping/);
    } finally {
      native.munmap(id);
    }
  });
});

describe('environment cleanup', () => {
  it('closes every fd and mapping of a worker that is terminated', async () => {
    const before = openFds();
    const w = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const n = require(workerData);
      const fds = [];
      for (let i = 0; i < 20; i++) fds.push(n.eventfdCreate(0));
      const [a, b] = n.socketPair();
      const m = n.memfdCreate('w', 1 << 20);
      n.mmapFd(m, 1 << 20, 0);
      const p = new n.Poller(a, () => {});
      p.start(1);
      parentPort.postMessage({ owned: n.ownedFds(), maps: n.mappingCount() });
      setInterval(() => {}, 1000);
      `,
      // The addon under test (the sanitized one under test:asan): two different builds of it in
      // one process would be two copies of every native symbol.
      { eval: true, workerData: nativeAddonPath() },
    );
    const info = await new Promise<{ owned: number; maps: number }>((r) => w.once('message', r));
    expect(info).toEqual({ owned: 23, maps: 1 });
    expect(openFds()).toBeGreaterThanOrEqual(before + 23);
    await w.terminate();
    expect(openFds()).toBe(before);
  });
});
