/**
 * The package as an operator installs it (README "Install"): `npm pack`, then `npm install -g
 * --prefix` of the tarball into an empty root on this machine (offline, from npm's cache; the
 * addon built by the package's install script against the running Node's headers, with the
 * node-gyp npm carries). The installed binary answers --print-capabilities and --version; the
 * shipped units, copied where the README says, are clean under `systemd-analyze verify --root`;
 * the QEMU descriptor names the installed binary; and the installed binary, started under the
 * service unit's capability bounding set and no_new_privs (setpriv, as systemd would apply
 * them) with --user nobody, serves a real QEMU through a TAP.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startQemu } from '../src/guest/qemu.js';
import { packageRoot } from '../src/native.js';
import { Proc } from '../src/util/proc.js';
import { tempDir, waitFor } from './helpers/harness.js';

const tmp = tempDir('vun-install-');
const root = join(tmp.dir, 'root');
const prefix = join(root, 'usr', 'local');
const bin = join(prefix, 'bin', 'vhost-user-net');
const cleanups: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  tmp.cleanup();
});

/** The service unit's value for `key` (the last line that sets it). */
function unitValue(unit: string, key: string): string {
  const lines = unit.split('\n').filter((l) => l.startsWith(`${key}=`));
  return (lines[lines.length - 1] ?? '').slice(key.length + 1);
}

describe('install from the tarball', () => {
  it('npm pack, then npm install -g --prefix into an empty root: the addon builds, the binary runs', () => {
    const packed = execFileSync('npm', ['pack', '--silent', '--pack-destination', tmp.dir], {
      cwd: packageRoot,
      encoding: 'utf8',
    }).trim();
    const tarball = join(tmp.dir, packed.split('\n').pop() as string);
    expect(existsSync(tarball)).toBe(true);
    mkdirSync(prefix, { recursive: true });
    const r = spawnSync(
      'npm',
      ['install', '-g', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', '--prefix', prefix, tarball],
      { encoding: 'utf8', timeout: 600_000, env: { ...process.env, LD_PRELOAD: '' } },
    );
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    // Nothing fetched: the addon compiled against the running Node's headers.
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/nodejs\.org|Downloading|node-v\d+.*headers/i);
    expect(existsSync(join(prefix, 'lib', 'node_modules', 'vhost-user-net', 'build', 'Release'))).toBe(true);
    const caps = spawnSync(bin, ['--print-capabilities'], { encoding: 'utf8' });
    expect(caps.status, caps.stderr).toBe(0);
    expect(JSON.parse(caps.stdout)).toEqual({ type: 'net' });
    expect(spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout).toMatch(/^vhost-user-net \d+\.\d+\.\d+/);
  }, 700_000);

  it('the units, copied as the README says, verify clean; the QEMU descriptor names the installed binary', () => {
    const units = join(root, 'etc', 'systemd', 'system');
    mkdirSync(units, { recursive: true });
    // What systemd-analyze needs of the rest of a system in the root: systemd's own units (the
    // targets the service hangs on) and /bin/kill (ExecReload), as on the host.
    mkdirSync(join(root, 'usr', 'lib', 'systemd'), { recursive: true });
    execFileSync('cp', ['-a', '/usr/lib/systemd/system', join(root, 'usr', 'lib', 'systemd')]);
    mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
    copyFileSync('/usr/bin/kill', join(root, 'usr', 'bin', 'kill'));
    chmodSync(join(root, 'usr', 'bin', 'kill'), 0o755);
    symlinkSync('usr/bin', join(root, 'bin'));
    for (const u of ['vhost-user-net@.service', 'vhost-user-net@.socket']) {
      copyFileSync(join(prefix, 'lib', 'node_modules', 'vhost-user-net', 'contrib', 'systemd', u), join(units, u));
    }
    const v = spawnSync('systemd-analyze', ['verify', `--root=${root}`, 'vhost-user-net@vm1.service'], {
      encoding: 'utf8',
    });
    expect(`${v.stdout}${v.stderr}`.trim(), 'systemd-analyze verify').toBe('');
    expect(v.status).toBe(0);
    const sec = spawnSync(
      'systemd-analyze',
      ['security', '--offline=yes', `--root=${root}`, 'vhost-user-net@vm1.service'],
      {
        encoding: 'utf8',
      },
    );
    const exposure = /Overall exposure level for vhost-user-net@vm1.service: ([\d.]+)/.exec(sec.stdout)?.[1];
    console.log(`systemd-analyze security: exposure ${exposure}`);
    expect(Number(exposure), sec.stdout.slice(-500)).toBeLessThan(6);
    // vhost-user.json's VhostUserBackend: description, type, binary (absolute), tags.
    const desc = JSON.parse(
      readFileSync(
        join(prefix, 'lib', 'node_modules', 'vhost-user-net', 'contrib', 'qemu', '50-vhost-user-net.json'),
        'utf8',
      ),
    ) as Record<string, unknown>;
    expect(Object.keys(desc).sort()).toEqual(['binary', 'description', 'tags', 'type']);
    expect(desc.type).toBe('net');
    const service = readFileSync(join(units, 'vhost-user-net@.service'), 'utf8');
    expect(unitValue(service, 'ExecStart').split(' ')[0]).toBe(desc.binary);
    expect(join(root, desc.binary as string)).toBe(bin);
  });

  it('under the unit’s capability bounding set and no_new_privs, with --user nobody, the installed binary serves QEMU', async () => {
    const service = readFileSync(join(root, 'etc', 'systemd', 'system', 'vhost-user-net@.service'), 'utf8');
    const caps = unitValue(service, 'CapabilityBoundingSet')
      .split(/\s+/)
      .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`);
    expect(unitValue(service, 'NoNewPrivileges')).toBe('yes');
    const ns = `vun-inst-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    cleanups.push(() => spawnSync('ip', ['netns', 'del', ns]));
    const sockDir = tempDir('vun-install-sock-');
    cleanups.push(sockDir.cleanup);
    const sock = join(sockDir.dir, 'vm1.sock');
    const backend = new Proc('ip', [
      'netns',
      'exec',
      ns,
      'setpriv',
      '--no-new-privs',
      `--bounding-set=-all,${caps.join(',')}`,
      realpathSync(bin),
      '--socket',
      sock,
      '--backend',
      'tap:vunI0',
      '--user',
      'nobody:nogroup',
      '--socket-group',
      'nogroup',
      '--socket-mode',
      '0666',
    ]);
    cleanups.push(() => backend.stop());
    await waitFor(() => backend.output.includes('privileges dropped') || !backend.running, 20_000, 'the drop');
    expect(backend.running, backend.tail(20)).toBe(true);
    const qemu = startQemu({ socketPath: sock });
    cleanups.push(() => qemu.stop());
    await waitFor(() => /vring started/.test(backend.output) || !qemu.running, 60_000, 'a ring started by QEMU');
    expect(backend.output, backend.tail(20)).toMatch(/vring started/);
  }, 120_000);

  it('a scratch project depends on the tarball, imports startBackend and serves QEMU with it', async () => {
    const project = join(tmp.dir, 'scratch');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
    const tarball = join(tmp.dir, readdirSync(tmp.dir).find((f) => f.endsWith('.tgz')) as string);
    const r = spawnSync('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], {
      cwd: project,
      encoding: 'utf8',
      timeout: 600_000,
      env: { ...process.env, LD_PRELOAD: '' },
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const sock = join(project, 'vm.sock');
    // The README's example, as another project writes it.
    writeFileSync(
      join(project, 'serve.mjs'),
      `import { startBackend } from 'vhost-user-net';
const backend = await startBackend({ socket: ${JSON.stringify(sock)}, host: 'null' });
backend.on('session', (s) => console.log('session', s.id));
setInterval(() => {
  const kicked = backend.counters().filter((c) => c.kicks > 0).length;
  if (kicked) console.log('kicked vrings', kicked);
}, 200);
process.once('SIGTERM', () => backend.stop().then(() => process.exit(0)));
`,
    );
    const app = new Proc(process.execPath, [join(project, 'serve.mjs')], { cwd: project });
    cleanups.push(() => app.stop());
    await waitFor(() => existsSync(sock) || !app.running, 20_000, 'the scratch project to listen');
    expect(app.running, app.tail(20)).toBe(true);
    const qemu = startQemu({ socketPath: sock });
    cleanups.push(() => qemu.stop());
    await waitFor(() => /kicked vrings [1-9]/.test(app.output) || !qemu.running, 60_000, 'QEMU served by the project');
    expect(app.output, app.tail(20)).toMatch(/session 1/);
  }, 700_000);
});
