/**
 * systemd: socket activation and readiness, without a running systemd. Debian's
 * systemd-socket-activate owns the listening socket and starts the real backend on the first
 * connection, passing it the socket (LISTEN_FDS); the test owns the NOTIFY_SOCKET and reads
 * READY=1 from it, and a front-end is served through the activated socket.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';
import { Notifier, systemdListenFd } from '../src/service/systemd.js';
import { startQemu } from '../src/guest/qemu.js';
import { Proc, requireCommand } from '../src/util/proc.js';
import { native, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('sd_listen_fds', () => {
  it.each([
    [{ LISTEN_PID: '42', LISTEN_FDS: '1' }, 3],
    [{ LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'metrics:vhost-user' }, 4],
    [{ LISTEN_PID: '41', LISTEN_FDS: '1' }, undefined],
    [{ LISTEN_PID: '42', LISTEN_FDS: '0' }, undefined],
    [{}, undefined],
  ])('%j gives %s, and the variables are gone after', (vars, fd) => {
    const env: NodeJS.ProcessEnv = { ...vars };
    expect(systemdListenFd(env, 42)).toBe(fd);
    expect(env.LISTEN_FDS).toBeUndefined();
    expect(env.LISTEN_PID).toBeUndefined();
  });
});

/** Every datagram waiting on a notify socket, as text. */
function drain(fd: number): string[] {
  const out: string[] = [];
  const buf = Buffer.alloc(4096);
  for (;;) {
    let n: number;
    try {
      n = native.fdRead(fd, buf);
    } catch {
      break;
    }
    if (n <= 0) break;
    out.push(buf.subarray(0, n).toString());
  }
  return out;
}

describe('sd_notify', () => {
  it('READY=1 with a status, then WATCHDOG=1 pings at half WATCHDOG_USEC, then STOPPING=1', async () => {
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const path = join(tmp.dir, 'notify');
    const fd = native.datagramBind(path);
    cleanups.push(() => native.close(fd));
    const n = new Notifier(native, { NOTIFY_SOCKET: path, WATCHDOG_USEC: '100000' });
    n.ready('serving');
    await new Promise((r) => setTimeout(r, 180));
    n.stopping();
    const got = drain(fd);
    expect(got[0]).toBe(`READY=1\nSTATUS=serving\nMAINPID=${process.pid}`);
    expect(got.filter((g) => g === 'WATCHDOG=1').length).toBeGreaterThanOrEqual(2);
    expect(got[got.length - 1]).toBe('STOPPING=1');
  });
});

/**
 * systemd-socket-activate listening on a socket of its own, ready to start the real backend
 * (null host) on the first connection, with NOTIFY_SOCKET pointing at a socket the test reads.
 */
async function activated(): Promise<{ sock: string; nfd: number; activator: Proc }> {
  requireCommand('systemd-socket-activate', 'systemd');
  const tmp = tempDir();
  cleanups.push(tmp.cleanup);
  const sock = join(tmp.dir, 'vhost.sock');
  const notify = join(tmp.dir, 'notify');
  const nfd = native.datagramBind(notify);
  cleanups.push(() => native.close(nfd));
  const activator = new Proc('systemd-socket-activate', [
    '-l',
    sock,
    '--fdname=vhost-user',
    '-E',
    `NOTIFY_SOCKET=${notify}`,
    process.execPath,
    join(packageRoot, 'bin', 'vhost-user-net.js'),
    '--backend',
    'null',
    '--log-level',
    'info',
  ]);
  cleanups.push(() => activator.stop());
  await waitFor(() => existsSync(sock), 10_000, 'the socket systemd-socket-activate listens on');
  return { sock, nfd, activator };
}

describe('socket activation', () => {
  it('systemd-socket-activate starts the backend on its socket; READY=1 arrives; a front-end is served', async () => {
    const { sock, nfd, activator } = await activated();
    // Nothing started yet: the first connection starts the backend.
    expect(drain(nfd)).toEqual([]);
    const fe = MockFrontend.connect(native, sock);
    cleanups.push(() => fe.close());
    const { protocolFeatures } = await fe.handshake();
    expect(protocolFeatures).toBeGreaterThan(0n);
    const notes: string[] = [];
    await waitFor(() => (notes.push(...drain(nfd)), notes.some((x) => x.startsWith('READY=1'))), 10_000, 'READY=1');
    expect(notes.find((x) => x.startsWith('READY=1'))).toMatch(/STATUS=serving vhost-user on fd 3/);
    expect(activator.output).toMatch(/session started/);
    // The socket is systemd's: the backend does not remove the file when it stops.
    await activator.stop();
    expect(existsSync(sock)).toBe(true);
  }, 30_000);

  it('a real QEMU connects through the activated socket and its driver starts the rings', async () => {
    const { sock, nfd, activator } = await activated();
    const qemu = startQemu({ socketPath: sock });
    cleanups.push(() => qemu.stop());
    const notes: string[] = [];
    await waitFor(() => (notes.push(...drain(nfd)), notes.some((x) => x.startsWith('READY=1'))), 20_000, 'READY=1');
    await waitFor(
      () => /"vring started","vring":0/.test(activator.output),
      90_000,
      `QEMU's driver starting receiveq 0\n${activator.output.slice(-2000)}\n${qemu.tail(20)}`,
    );
    expect(activator.output).toMatch(/"what":"features acked"/);
  }, 120_000);
});
