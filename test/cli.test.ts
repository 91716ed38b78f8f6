/** The command line: parsing, config file errors, and the real binary's conventions. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { groupId, userId } from '../src/service/users.js';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FLAGS, mergeFlags } from '../src/cli/flags.js';
import { parseCommandLine, USAGE } from '../src/cli/main.js';
import { formatHostBackend, parseHostBackend, stableMac } from '../src/host/host-backend.js';
import { configSchema, threadMapOf } from '../src/config/config.js';
import { ConfigError } from '../src/errors.js';
import { packageRoot } from '../src/native.js';
import { native, openFds, tempDir, waitFor } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

const bin = join(packageRoot, 'bin', 'vhost-user-net.js');

function configErrorOf(argv: string[]): ConfigError {
  try {
    parseCommandLine(argv);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('no error');
}

describe('parseCommandLine', () => {
  it('takes --socket and --socket-path as the same option', () => {
    for (const flag of ['--socket', '--socket-path']) {
      const r = parseCommandLine([flag, '/tmp/a.sock', '--queues', '4', '--backend', 'tap:vun0']);
      if (r.action !== 'serve') throw new Error('not serve');
      expect(r.config.socket.path).toBe('/tmp/a.sock');
      expect(r.config.queues).toBe(4);
      expect(r.config.hostBackend).toEqual({ kind: 'tap', name: 'vun0' });
    }
  });

  it.each([
    ['tap:vun0', { kind: 'tap', name: 'vun0' }],
    ['af-packet:veth1', { kind: 'af-packet', iface: 'veth1' }],
    ['af-packet:veth1,qdisc-bypass', { kind: 'af-packet', iface: 'veth1', qdiscBypass: true }],
    ['af-packet:veth1,rx-ring', { kind: 'af-packet', iface: 'veth1', rxRing: true }],
    ['loopback', { kind: 'loopback' }],
    ['null', { kind: 'null' }],
    ['null:source=1518', { kind: 'null', sourceLen: 1518 }],
  ])('parses backend %s', (spec, want) => {
    const r = parseCommandLine(['serve', '--socket', '/tmp/x', '--backend', spec]);
    expect(r.action === 'serve' && r.config.hostBackend).toEqual(want);
  });

  it.each([
    [['--socket', '/tmp/x', '--backend', 'tap'], /backend: interface name/],
    [['--socket', '/tmp/x', '--backend', 'tap:this-name-is-too-long'], /backend: interface name/],
    [['--socket', '/tmp/x', '--backend', 'vde:x'], /unknown kind 'vde'/],
    [['--socket', '/tmp/x', '--backend', 'null:source=10'], /LEN in 60..65535/],
    [
      ['--socket', '/tmp/x', '--backend', 'af-packet:veth1,rx-ring', '--datapath', 'ts'],
      /rx-ring is read by the native/,
    ],
    [['--socket', '/tmp/x', '--backend', 'af-packet:veth1,rxring'], /unknown af-packet option 'rxring'/],
    [['--socket', '/tmp/x', '--queues', '0'], /queues: /],
    [['--socket', '/tmp/x', '--queues', 'two'], /--queues takes a whole number/],
    [['--socket', '/tmp/x', '--socket-mode', '999'], /socket.mode: must be an octal/],
    [[], /socket.path: required/],
    [['--client', '--fd', '3'], /cannot be used in client mode/],
    [['--socket', '/a', '--socket-path', '/b'], /name different paths/],
    [['--nope'], /Unknown option '--nope'/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ])('rejects %j', (argv, message) => {
    expect(configErrorOf(argv as string[]).message).toMatch(message);
  });

  it('reads a config file, lets flags win, and names every problem with its path', () => {
    const tmp = tempDir();
    const f = join(tmp.dir, 'c.json');
    writeFileSync(
      f,
      JSON.stringify({ socket: { path: '/tmp/from-file', mode: '0640' }, queues: 2, log: { level: 'debug' } }),
    );
    const r = parseCommandLine(['--config', f, '--queues', '3']);
    if (r.action !== 'serve') throw new Error('not serve');
    expect(r.config.socket).toMatchObject({ path: '/tmp/from-file', mode: 0o640 });
    expect(r.config.queues).toBe(3);
    expect(r.config.log.level).toBe('debug');
    writeFileSync(
      f,
      JSON.stringify({ socket: { path: '/tmp/x', colour: 'red' }, queues: 100, log: { level: 'loud' } }),
    );
    const e = configErrorOf(['--config', f]);
    expect(e.issues.length).toBe(3);
    expect(e.message).toMatch(/socket: Unrecognized key.*colour/);
    expect(e.message).toMatch(/queues: /);
    expect(e.message).toMatch(/log.level: /);
    writeFileSync(f, '{ "queues": 2,, }');
    expect(configErrorOf(['--config', f]).message).toMatch(/not valid JSON/);
    expect(configErrorOf(['--config', join(tmp.dir, 'missing.json')]).message).toMatch(/cannot read config file/);
    tmp.cleanup();
  });
});

describe('host backend details', () => {
  it('derives a stable, locally administered TAP MAC from the name, and takes --tap-mac', () => {
    expect(stableMac('vhost-user-net:vun0')).toBe(stableMac('vhost-user-net:vun0'));
    expect(stableMac('vhost-user-net:vun0')).not.toBe(stableMac('vhost-user-net:vun1'));
    expect(stableMac('x')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    const r = parseCommandLine(['--socket', '/tmp/x', '--tap-mac', '02:aa:bb:cc:dd:ee', '--datapath', 'ts']);
    expect(r.action === 'serve' && r.config.tapMac).toBe('02:aa:bb:cc:dd:ee');
    expect(r.action === 'serve' && r.config.datapath).toBe('ts');
    expect(configErrorOf(['--socket', '/tmp/x', '--tap-mac', 'nope']).message).toMatch(/tapMac: must be six hex pairs/);
    expect(configErrorOf(['--socket', '/tmp/x', '--datapath', 'fast']).message).toMatch(/datapath: /);
    const t = parseCommandLine(['--socket', '/tmp/x', '--queues', '4', '--threads', '2', '--cpus', '0,1']);
    if (t.action !== 'serve') throw new Error('not serve');
    expect(threadMapOf(t.config)).toEqual([0, 1, 0, 1]);
    expect(t.config.cpus).toEqual([0, 1]);
    expect(configErrorOf(['--socket', '/tmp/x', '--queues', '2', '--threads', '3']).message).toMatch(
      /threads: 3 threads for 2/,
    );
  });

  it('takes the capture options, and the ring trace on either data path', () => {
    const r = parseCommandLine([
      '--socket',
      '/tmp/x',
      '--pcap',
      '/tmp/c.pcapng',
      '--pcap-snaplen',
      '128',
      '--pcap-max-mb',
      '10',
      '--pcap-files',
      '3',
      '--trace-rings',
      '/tmp/r.jsonl',
    ]);
    if (r.action !== 'serve') throw new Error('not serve');
    expect(r.config.pcap).toEqual({ file: '/tmp/c.pcapng', snapLen: 128, maxMb: 10, keepFiles: 3, frames: 'both' });
    expect(r.config.datapath).toBe('native');
    expect(r.config.trace.rings).toBe('/tmp/r.jsonl');
    expect(configErrorOf(['--socket', '/tmp/x', '--pcap-snaplen', '128']).message).toMatch(
      /--pcap-snaplen needs --pcap FILE/,
    );
    expect(configErrorOf(['--socket', '/tmp/x', '--pcap', 'f', '--pcap-snaplen', '10']).message).toMatch(
      /pcap.snapLen: /,
    );
  });
});

describe('the binary', () => {
  it('is built (npm run build) before these tests run', () => {
    expect(existsSync(join(packageRoot, 'dist', 'cli', 'main.js')), 'dist/ missing: run npm run build').toBe(true);
  });

  it("--print-capabilities prints what QEMU's vhost-user.json defines for a net backend, ignoring every other option", () => {
    for (const args of [
      ['--print-capabilities'],
      ['--print-capabilities', '--queues', '999', '--backend', 'nonsense'],
      ['--no-such-option', '--print-capabilities', 'extra-word'],
    ]) {
      const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      // VHostUserBackendCapabilities: the base member `type`; `net` has no variant members.
      expect(JSON.parse(r.stdout)).toEqual({ type: 'net' });
      expect(r.stderr).toBe('');
    }
  });

  it('--fd and --socket-path together are refused (vhost-user.rst: incompatible)', () => {
    const r = spawnSync(process.execPath, [bin, '--fd', '3', '--socket-path', '/tmp/vun-x.sock'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--fd and --socket-path \(socket.path\) name two sockets; give one/);
    expect(r.stderr).toMatch(/VUN_CONFIG_INVALID/);
  });

  it('--help and --version', () => {
    const h = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
    expect(h.status).toBe(0);
    expect(h.stdout).toMatch(/--socket-path/);
    // Every backend and every backend option the parser takes.
    for (const word of [
      'tap:NAME',
      'persist',
      'io-uring=on|off|auto',
      'macvtap:PARENT',
      'mode=bridge|vepa|private|passthru',
      'af-packet:IFACE',
      'qdisc-bypass',
      'rx-ring',
      'loopback',
      'null[:source=LEN]',
    ])
      expect(h.stdout).toContain(word);
    const v = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
    expect(v.stdout).toMatch(/^vhost-user-net \d+\.\d+\.\d+/);
    expect(v.stdout).toMatch(/^protocol features offered: .*REPLY_ACK/m);
    expect(v.stdout).toMatch(/^virtio features offered: .*F_VERSION_1/m);
  });

  it('exits 2 when --cpus names a CPU this process may not use (checked at start, not at connect)', () => {
    const tmp = tempDir();
    const r = spawnSync(process.execPath, [bin, '--socket', join(tmp.dir, 's'), '--cpus', '1000'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    tmp.cleanup();
    expect(r.status).toBe(2);
    expect(r.stdout + r.stderr).toMatch(/cpus: 1000 not in this process's CPU set/);
  });

  it('exits 2 naming every problem when --faults gives a bad plan', () => {
    const tmp = tempDir();
    const plan = join(tmp.dir, 'plan.json');
    writeFileSync(plan, JSON.stringify({ seed: 1, rules: [{ name: 'a', on: 'transmitq7', do: 'drop' }] }));
    const r = spawnSync(process.execPath, [bin, '--socket', join(tmp.dir, 's'), '--faults', plan], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    tmp.cleanup();
    expect(r.status).toBe(2);
    expect(r.stdout + r.stderr).toMatch(/VUN_FAULT_PLAN_INVALID/);
    expect(r.stdout + r.stderr).toMatch(/rules.0.on: transmitq7 does not exist/);
  });

  it('exits 2 when the config file carries a bad plan (an unknown request name), before it listens', () => {
    const tmp = tempDir();
    const config = join(tmp.dir, 'config.json');
    const sock = join(tmp.dir, 's');
    writeFileSync(
      config,
      JSON.stringify({
        faults: { seed: 1, rules: [{ name: 'n', on: 'session', do: 'nack', request: 'SET_NOTHING' }] },
      }),
    );
    const r = spawnSync(process.execPath, [bin, '--socket', sock, '--config', config], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    const listened = existsSync(sock);
    tmp.cleanup();
    expect(r.status).toBe(2);
    expect(r.stdout + r.stderr).toMatch(/config file: faults/);
    expect(r.stdout + r.stderr).toMatch(/rules.0.request: unknown vhost-user request 'SET_NOTHING'/);
    expect(listened).toBe(false);
  });

  it.each([
    // unshare -n: a fresh network namespace, where lo is down (the learner's case).
    ['an address no interface has (lo down in a fresh namespace)', '[::1]:9180', 'EADDRNOTAVAIL'],
    ['loopback while lo is down (it binds, but nothing could connect)', '127.0.0.1:9180', 'EADDRNOTAVAIL'],
    ['a port another process holds', 'BUSY', 'EADDRINUSE'],
  ])('exits 2 with a coded error when --http names %s, before it listens', async (_what, listen, errno) => {
    const tmp = tempDir();
    const sock = join(tmp.dir, 's');
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const addr = listen === 'BUSY' ? `127.0.0.1:${(busy.address() as AddressInfo).port}` : listen;
    const r = await new Promise<{ status: number | null; out: string }>((resolve) => {
      const args = [bin, '--socket', sock, '--backend', 'null', '--http', addr];
      const child =
        listen !== 'BUSY' ? spawn('unshare', ['-n', process.execPath, ...args]) : spawn(process.execPath, args);
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000); // still running: the bug
      child.once('exit', (status) => {
        clearTimeout(timer);
        resolve({ status, out });
      });
    });
    busy.close();
    const listened = existsSync(sock);
    tmp.cleanup();
    expect(r.out).toMatch(/VUN_CONFIG_HTTP_LISTEN/);
    expect(r.out).toContain(`--http: cannot listen on ${addr}`);
    expect(r.out).toContain(errno);
    expect(r.status).toBe(2);
    expect(listened).toBe(false);
  });

  it('--socket-owner/--socket-group reach the config; names resolve through NSS, unknown ones are refused', () => {
    const r = parseCommandLine(['--socket', '/tmp/x.sock', '--socket-owner', 'root', '--socket-group', 'nogroup']);
    expect(r.action === 'serve' && [r.config.socket.owner, r.config.socket.group]).toEqual(['root', 'nogroup']);
    expect(userId('nobody')).toEqual({ uid: 65534, gid: 65534 });
    expect(groupId('nogroup')).toBe(65534);
    expect(groupId('123')).toBe(123);
    expect(() => groupId('no-such-group-here')).toThrow(/no such group: no-such-group-here/);
  });

  it('af-packet:IFACE,fanout=MODE names the kernel fanout mode over the pairs; unknown modes are refused', () => {
    expect(parseHostBackend('af-packet:vunA,fanout=lb')).toEqual({ kind: 'af-packet', iface: 'vunA', fanout: 'lb' });
    expect(formatHostBackend(parseHostBackend('af-packet:vunA,qdisc-bypass,fanout=cpu'))).toBe(
      'af-packet:vunA,qdisc-bypass,fanout=cpu',
    );
    expect(() => parseHostBackend('af-packet:vunA,fanout=rollover')).toThrow(/fanout=hash\|lb\|cpu\|rnd\|qm/);
  });

  it('tap:NAME,persist asks for a TAP that outlives the backend; other TAP options are refused', () => {
    expect(parseHostBackend('tap:vun0,persist')).toEqual({ kind: 'tap', name: 'vun0', persist: true });
    expect(formatHostBackend(parseHostBackend('tap:vun0,persist'))).toBe('tap:vun0,persist');
    expect(parseHostBackend('tap:vun0')).toEqual({ kind: 'tap', name: 'vun0' });
    expect(() => parseHostBackend('tap:vun0,forever')).toThrow(ConfigError);
  });

  it('io-uring=on|off|auto (TAP and macvtap: batches, one frame per write, or the cheaper measured) survives formatting', () => {
    const tap = parseHostBackend('tap:vun0,persist,io-uring=off');
    expect(tap).toEqual({ kind: 'tap', name: 'vun0', persist: true, writes: 'plain' });
    expect(formatHostBackend(tap)).toBe('tap:vun0,persist,io-uring=off');
    expect(parseHostBackend('tap:vun0,io-uring=on')).toEqual({ kind: 'tap', name: 'vun0', writes: 'io-uring' });
    expect(formatHostBackend(parseHostBackend('tap:vun0,io-uring=on'))).toBe('tap:vun0,io-uring=on');
    expect(parseHostBackend('tap:vun0,io-uring=auto')).toEqual({ kind: 'tap', name: 'vun0', writes: 'auto' });
    expect(formatHostBackend(parseHostBackend('tap:vun0,io-uring=auto'))).toBe('tap:vun0,io-uring=auto');
    const mv = parseHostBackend('macvtap:eth1,mode=passthru,io-uring=off');
    expect(mv).toEqual({ kind: 'macvtap', parent: 'eth1', mode: 'passthru', writes: 'plain' });
    expect(parseHostBackend(formatHostBackend(mv))).toEqual(mv);
    expect(() => parseHostBackend('tap:vun0,io-uring=maybe')).toThrow(/io-uring=on\|off/);
  });

  it('af-packet options survive formatting (what /status and a restart show)', () => {
    const spec = parseHostBackend('af-packet:veth1,qdisc-bypass,rx-ring');
    expect(spec).toEqual({ kind: 'af-packet', iface: 'veth1', qdiscBypass: true, rxRing: true });
    expect(formatHostBackend(spec)).toBe('af-packet:veth1,qdisc-bypass,rx-ring');
  });

  it('macvtap:PARENT takes a mode, the guest MAC and a name; without a MAC only passthru', () => {
    const spec = parseHostBackend('macvtap:veth0,mode=vepa,mac=52:54:00:AB:cd:ef,name=mv0');
    expect(spec).toEqual({ kind: 'macvtap', parent: 'veth0', mode: 'vepa', mac: '52:54:00:ab:cd:ef', name: 'mv0' });
    expect(parseHostBackend(formatHostBackend(spec))).toEqual(spec);
    expect(parseHostBackend('macvtap:eth1,mode=passthru')).toEqual({
      kind: 'macvtap',
      parent: 'eth1',
      mode: 'passthru',
    });
    expect(() => parseHostBackend('macvtap:eth1')).toThrow(/needs mac=GUEST_MAC/);
    expect(() => parseHostBackend('macvtap:eth1,mode=hub,mac=52:54:00:00:00:01')).toThrow(/mode=hub/);
    expect(() => parseHostBackend('macvtap:eth1,mac=52:54:00:00:01')).toThrow(ConfigError);
  });

  it('exits 2 with a coded message on a bad argument', () => {
    const r = spawnSync(process.execPath, [bin, '--socket', '/tmp/x', '--queues', '999'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/queues: .*\n\[VUN_CONFIG_INVALID\]/);
  });

  it.each([['--pcap'], ['--trace-rings'], ['--trace-messages']])(
    'exits 1 with a coded message when %s names a file it cannot open',
    (flag) => {
      const tmp = tempDir();
      const r = spawnSync(
        process.execPath,
        [bin, '--socket', join(tmp.dir, 's.sock'), flag, '/nonexistent-dir/out', '--log-level', 'info'],
        { encoding: 'utf8', timeout: 10_000 },
      );
      tmp.cleanup();
      expect(r.status, r.stderr).toBe(1);
      expect(r.stdout).toMatch(/"code":"VUN_HOST_OUTPUT_FILE"/);
      expect(r.stdout).toMatch(/cannot open \/nonexistent-dir\/out for writing/);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace
    },
  );

  it('serves on an inherited listening socket (--fd) and logs JSON lines', async () => {
    const tmp = tempDir();
    const path = join(tmp.dir, 'inherited.sock');
    const before = openFds();
    const lfd = native.unixListen(path, 0o600, 4);
    const child = spawn(process.execPath, [bin, '--fd', '3', '--log-level', 'debug'], {
      stdio: ['ignore', 'pipe', 'pipe', lfd],
    });
    native.close(lfd);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes('"msg":"listening"'), 10_000, 'child to listen');
    const fe = MockFrontend.connect(native, path);
    expect(await fe.u64('GET_QUEUE_NUM')).toBe(1n);
    fe.close();
    await waitFor(() => out.includes('"msg":"session closed"'), 5000, 'session to close');
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; request?: string });
    expect(lines.some((l) => l.msg === 'message' && l.request === 'GET_QUEUE_NUM')).toBe(true);
    expect(openFds()).toBe(before);
    tmp.cleanup();
  });

  it('serves a connected socket given as --fd (SO_ACCEPTCONN unset) as its one session, then exits 0', async () => {
    const before = openFds();
    const [ours, theirs] = native.socketPair();
    const child = spawn(process.execPath, [bin, '--fd', '3', '--log-level', 'info'], {
      stdio: ['ignore', 'pipe', 'pipe', theirs],
    });
    native.close(theirs);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    const fe = new MockFrontend(native, ours);
    expect(await fe.u64('GET_QUEUE_NUM')).toBe(1n);
    expect(out).toMatch(/"msg":"serving a connected --fd"/);
    expect(out).not.toMatch(/"msg":"listening"/);
    // The front-end goes: the session ends, and with it the process, by itself.
    fe.close();
    expect(await exited).toBe(0);
    expect(out).toMatch(/the --fd connection closed/);
    expect(openFds()).toBe(before);
  });
});

describe('flags, declared once (src/cli/flags.ts)', () => {
  it('every flag with a config path names a key of the config schema, and the merge writes it there', () => {
    for (const f of FLAGS.filter((x) => x.config)) {
      const path = (f.config as string).split('.');
      let shape: Record<string, unknown> = configSchema.shape;
      for (const k of path.slice(0, -1)) {
        expect(shape, `${f.name}: ${f.config}`).toHaveProperty(k);
        // Unwrap defaults/optionals down to the object's shape.
        let inner = shape[k] as { def?: { innerType?: unknown }; shape?: Record<string, unknown> };
        while (!inner.shape && inner.def?.innerType) inner = inner.def.innerType as typeof inner;
        shape = inner.shape as Record<string, unknown>;
      }
      expect(shape, `${f.name}: ${f.config}`).toHaveProperty(path[path.length - 1] as string);
      const sample = f.kind === 'boolean' ? true : f.kind === 'int' ? '7' : f.kind === 'list' ? '1,2' : 'x';
      const merged = mergeFlags({ pcap: { file: 'f' } }, { [f.name]: sample });
      const got = path.reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], merged);
      expect(got, f.name).toEqual(f.kind === 'int' ? 7 : f.kind === 'list' ? [1, 2] : sample);
    }
  });

  it('the usage text lists every flag', () => {
    for (const f of FLAGS) expect(USAGE).toContain(`--${f.name}`);
  });
});
