/**
 * `vhost-user-net guest` and `vhost-user-net conditions` as a driver engineer runs them (the
 * commands of docs/faults.md "Test your kernel in one command"): a kernel passed as a file (the
 * 6.12 bzImage copied out of the package cache, its virtio-net modules as a directory), the same
 * kernel without its modules (the error names the option), a command's exit status passed through,
 * and the conditions command's JSON on two Debian kernels.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { requireRoot } from '../src/guest/guest.js';
import { resolveKernel } from '../src/guest/kernels.js';
import { waitFor } from '../src/util/wait.js';
import { packageRoot } from '../src/native.js';
import { tempDir } from '../test/helpers/harness.js';

const BIN = join(packageRoot, 'bin', 'vhost-user-net.js');
const tmp = tempDir('vun-guest-cmd-');
afterAll(() => tmp.cleanup());

function cli(args: string[], timeoutMs = 240_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out, err });
    });
  });
}

/** The 6.12 kernel as a user would hold it: a bzImage file and a directory of modules. */
function kernelAsFiles(): { bzImage: string; modules: string } {
  const k = resolveKernel({ package: 'linux-image-6.12-cloud-amd64' });
  const bzImage = join(tmp.dir, 'bzImage-6.12');
  copyFileSync(k.vmlinuz, bzImage);
  const modules = join(tmp.dir, 'modules');
  mkdirSync(modules, { recursive: true });
  const r = spawnSync('sh', ['-c', `cd '${modules}' && gzip -dc '${k.modules}' | busybox cpio -id 2>&1`], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`unpacking the modules failed: ${r.stdout}`);
  return { bzImage, modules };
}

describe('vhost-user-net guest', () => {
  requireRoot();
  const files = kernelAsFiles();

  it('boots a kernel given as a file, with its modules, runs the command and exits with its status', async () => {
    const out = join(tmp.dir, 'artifacts');
    const r = await cli([
      'guest',
      '--kernel',
      files.bzImage,
      '--modules',
      files.modules,
      '--out',
      out,
      '--run',
      'ip link show eth0',
    ]);
    const ctx = `exit ${r.code}\nstdout:\n${r.out}\nstderr:\n${r.err}`;
    expect(r.code, ctx).toBe(0);
    expect(r.out, ctx).toMatch(/eth0: <[^>]*\bUP\b[^>]*>/);
    expect(r.err, ctx).toContain('6.12.118');
    // It says where the artifacts are, and they are there.
    for (const f of ['messages.jsonl', 'rings.jsonl', 'capture.pcapng', 'faults.jsonl', 'console.log']) {
      expect(r.err, ctx).toContain(join(out, f));
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    expect(statSync(join(out, 'messages.jsonl')).size, 'the message trace has the session').toBeGreaterThan(0);
    expect(readFileSync(join(out, 'console.log'), 'utf8')).toContain('VUN-KERNEL 6.12.118');
  }, 300_000);

  it("forwards the ring page and /status out of the guest's namespace (socat) while the guest runs", async () => {
    const run = cli(['guest', '--run', 'sleep 8']);
    let status: Record<string, unknown> | undefined;
    const t0 = Date.now();
    while (!status && Date.now() - t0 < 60_000) {
      try {
        const res = await fetch('http://127.0.0.1:9180/status');
        if (res.ok) status = (await res.json()) as Record<string, unknown>;
      } catch {
        // not up yet
      }
      if (!status) await new Promise((r) => setTimeout(r, 300));
    }
    const page = status ? await (await fetch('http://127.0.0.1:9180/rings.html')).text() : '';
    const r = await run;
    expect(r.err, r.err).toContain('ring page:     http://127.0.0.1:9180/ (forwarded from netns');
    expect(status, `no /status on 127.0.0.1:9180\n${r.err}`).toBeDefined();
    expect(JSON.stringify(status)).toContain('vrings');
    expect(page).toMatch(/<html/i);
    expect(r.code).toBe(0);
  }, 240_000);

  it('names the missing option when virtio-net is a module and none was given', async () => {
    const r = await cli(['guest', '--kernel', files.bzImage, '--run', 'true']);
    const ctx = `exit ${r.code}\nstderr:\n${r.err}`;
    expect(r.code, ctx).toBe(2);
    expect(r.err, ctx).toMatch(/lacks CONFIG_VIRTIO_NET/);
  }, 300_000);

  it('gives the guest console to the terminal with --shell (commands in, output out, exit powers off)', async () => {
    const child = spawn(process.execPath, [BIN, 'guest', '--shell'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((res) => child.once('exit', res));
    try {
      // Typed once the shell prompts (bytes before that reach no reader).
      await waitFor(() => /exit the shell to power off[\s\S]*# /.test(out), 120_000, 'the guest shell');
      child.stdin.write('echo "in the guest: $(uname -r) $(cat /sys/class/net/eth0/address)"\nexit\n');
      const code = await Promise.race([exited, new Promise<'late'>((res) => setTimeout(() => res('late'), 60_000))]);
      expect(code, out.slice(-2000)).toBe(0);
      expect(out).toMatch(/in the guest: 6\.1\.\S+ 52:54:00:12:34:56/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 240_000);

  it("exits with the command's status", async () => {
    const r = await cli(['guest', '--run', 'ip link show eth0 >/dev/null && exit 7']);
    expect(r.code, `stderr:\n${r.err}`).toBe(7);
  }, 300_000);
});

describe('vhost-user-net conditions', () => {
  it('row 2 on split rings: bad-ring on both kernels, soft-lockup on 6.1 only (JSON)', async () => {
    const json = join(tmp.dir, 'out.json');
    const r = await cli(
      [
        'conditions',
        '--kernel-package',
        'linux-image-cloud-amd64',
        '--kernel-package',
        'linux-image-6.12-cloud-amd64',
        '--rows',
        '2',
        '--ring',
        'split',
        '--jobs',
        '2',
        '--json',
        json,
      ],
      300_000,
    );
    const ctx = `exit ${r.code}\nstdout:\n${r.out}\nstderr:\n${r.err}`;
    expect(r.code, ctx).toBe(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as {
      results: { kernel: string; signatures: string[]; verdict: string }[];
    };
    const on = (series: RegExp) => report.results.find((x) => series.test(x.kernel));
    expect(on(/^6\.1\./)?.signatures, ctx).toEqual(expect.arrayContaining(['bad-ring', 'soft-lockup']));
    expect(on(/^6\.1\./)?.verdict).toBe('finding');
    expect(on(/^6\.12\./)?.signatures, ctx).toContain('bad-ring');
    expect(on(/^6\.12\./)?.signatures, ctx).not.toContain('soft-lockup');
    // The terminal's matrix (stdout) and one line per result (stderr).
    expect(r.out).toMatch(/\| 2 \| completes a transmitq chain/);
    expect(r.err.match(/^row  2 split/gm)).toHaveLength(2);
  }, 320_000);
});
