/** Socket modes: server (socket file, mode, stale file), client (dial, backoff, redial). */
import { statSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VhostUserNetBackend } from '../src/backend.js';
import { HostIoError } from '../src/errors.js';
import { silentLogger } from '../src/log.js';
import { native, openFds, serve, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

const base = { client: false, socketMode: 0o600, queuePairs: 1, reconnectMinMs: 20, reconnectMaxMs: 80 };

describe('server mode', () => {
  it('creates the socket 0600 by default, or with the configured mode', () => {
    const a = serve();
    expect(statSync(a.path).mode & 0o777).toBe(0o600);
    a.stop();
    const b = serve({ socketMode: 0o660 });
    expect(statSync(b.path).mode & 0o777).toBe(0o660);
    b.stop();
  });

  it('makes a missing socket directory (0755, the socket owner and group), and says why when it cannot', () => {
    const tmp = tempDir();
    const path = join(tmp.dir, 'run', 'vhost-user-net', 'vm1.sock');
    const b = new VhostUserNetBackend(
      { ...base, socketPath: path, socketMode: 0o660, socketOwner: { uid: 0, gid: 65534 } },
      silentLogger(),
    );
    b.start();
    const dir = statSync(join(tmp.dir, 'run', 'vhost-user-net'));
    expect(dir.mode & 0o777).toBe(0o755);
    expect(dir.gid).toBe(65534);
    expect(statSync(path).gid).toBe(65534);
    const fe = MockFrontend.connect(native, path);
    fe.close();
    b.stop();
    // Under a file, no directory can be made: a coded host error, nothing left behind.
    writeFileSync(join(tmp.dir, 'file'), 'x');
    const c = new VhostUserNetBackend({ ...base, socketPath: join(tmp.dir, 'file', 'sub', 's.sock') }, silentLogger());
    expect(() => c.start()).toThrow(HostIoError);
    expect(() => c.start()).toThrow(/cannot make the socket's directory .*file\/sub/);
    tmp.cleanup();
  });

  it('removes a stale socket file and its own socket on stop', () => {
    const tmp = tempDir();
    const path = join(tmp.dir, 's.sock');
    // A crashed backend: its socket file stays behind with nobody listening.
    native.close(native.unixListen(path, 0o600, 1));
    expect(() => native.unixConnect(path)).toThrow(/ECONNREFUSED|refused/i);
    const b = new VhostUserNetBackend({ ...base, socketPath: path }, silentLogger());
    b.start();
    const fe = MockFrontend.connect(native, path);
    fe.close();
    b.stop();
    expect(existsSync(path)).toBe(false);
    tmp.cleanup();
  });

  it('refuses a live socket (another backend accepts on it) and leaves it in place', () => {
    const other = serve();
    const before = statSync(other.path).ino;
    const b = new VhostUserNetBackend({ ...base, socketPath: other.path }, silentLogger());
    let err: unknown;
    try {
      b.start();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HostIoError);
    expect((err as HostIoError).errno).toBe('EADDRINUSE');
    // The other backend keeps its socket and still serves.
    expect(statSync(other.path).ino).toBe(before);
    const fe = MockFrontend.connect(native, other.path);
    fe.close();
    other.stop();
  });

  it('never deletes a file that is not a socket', () => {
    const tmp = tempDir();
    const path = join(tmp.dir, 'precious');
    writeFileSync(path, 'data');
    const b = new VhostUserNetBackend({ ...base, socketPath: path }, silentLogger());
    expect(() => b.start()).toThrow(HostIoError);
    expect(existsSync(path)).toBe(true);
    tmp.cleanup();
  });

  it('serves one front-end at a time; the next waits and is served after', async () => {
    const srv = serve();
    const s1 = srv.nextSession();
    const a = srv.connect();
    await s1;
    const b = srv.connect();
    // b is queued in the backlog: no reply until a is gone.
    b.send(2 /* SET_FEATURES */, Buffer.alloc(8));
    b.send(1 /* GET_FEATURES */);
    await expect(b.nextReply(150)).rejects.toThrow(/no reply/);
    expect(await a.u64('GET_FEATURES')).toBeGreaterThan(0n);
    const s2 = srv.nextSession();
    a.close();
    await s2;
    expect((await b.nextReply()).request).toBe(1);
    const closed = srv.sessionClosed();
    b.close();
    await closed;
    srv.stop();
  });
});

describe('client mode', () => {
  it('dials with backoff until the front-end listens, and redials after a disconnect', async () => {
    const before = openFds();
    const tmp = tempDir();
    const path = join(tmp.dir, 'qemu.sock');
    const b = new VhostUserNetBackend({ ...base, client: true, socketPath: path }, silentLogger());
    b.start();
    await new Promise((r) => setTimeout(r, 100)); // a few failed dials (ENOENT)
    const lfd = native.unixListen(path, 0o600, 4);
    const accept = async (): Promise<MockFrontend> => {
      let fd = -1;
      await waitFor(() => (fd = native.unixAccept(lfd)) >= 0, 3000, 'backend to dial');
      return new MockFrontend(native, fd);
    };
    const fe = await accept();
    expect(await fe.u64('GET_QUEUE_NUM')).toBe(1n);
    await waitFor(() => b.session !== undefined);
    const closed = new Promise((r) => b.once('sessionClosed', r));
    fe.close();
    await closed;
    const fe2 = await accept();
    expect(await fe2.u64('GET_QUEUE_NUM')).toBe(1n);
    expect(b.sessions).toBe(2);
    b.stop();
    fe2.close();
    native.close(lfd);
    tmp.cleanup();
    expect(openFds()).toBe(before);
  });
});
