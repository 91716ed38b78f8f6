/**
 * `vhost-user-net guest`: a Linux guest (any kernel) on a backend started here, the host end a
 * TAP in a namespace made here (as the demo does), with every observation on: message and ring
 * traces, the capture, the fault log, the ring page. `--run CMD` runs CMD in the guest and
 * exits with its status; `--shell` gives the guest's console to the terminal.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { bootGuest, guestResults, requireRoot, scenarioBoot } from '../guest/guest.js';
import { GUEST_IP, HOST_IP, hostEnd } from '../guest/host-end.js';
import { type KernelSpec, kernelReport, resolveKernel } from '../guest/kernels.js';
import { qemuArgs } from '../guest/qemu.js';
import type { Proc } from '../util/proc.js';
import { waitFor } from '../util/wait.js';

export interface GuestRunOptions {
  kernel?: KernelSpec;
  ring?: 'split' | 'packed';
  queues?: number;
  /** A fault plan file (JSON), in force from the first session. */
  faults?: string;
  /** A shell command line run in the guest; the exit status is its status. */
  run?: string;
  /** The guest's console on this terminal instead (exit the shell to stop). */
  shell?: boolean;
  /** Where the artifacts go (default a new directory under /tmp, kept). */
  out?: string;
  /** Seconds the guest may take (default 600; --shell has no limit). */
  timeoutS?: number;
}

const HTTP_PORT = 9180;
const say = (s: string) => process.stderr.write(`${s}\n`);

/** The ring page and the HTTP endpoint live in the namespace: forward a host port when socat is there. */
function forwardHttp(ns: string): { url: string; proc?: Proc | undefined; stop?: () => void } {
  const inside = `http://127.0.0.1:${HTTP_PORT}/`;
  if (spawnSync('sh', ['-c', 'command -v socat']).status !== 0) {
    return { url: `${inside} inside netns ${ns} (ip netns exec ${ns} curl ${inside}status)` };
  }
  const child = spawn(
    'socat',
    [
      `TCP-LISTEN:${HTTP_PORT},bind=127.0.0.1,fork,reuseaddr`,
      `EXEC:ip netns exec ${ns} socat STDIO TCP\\:127.0.0.1\\:${HTTP_PORT}`,
    ],
    { stdio: 'ignore' },
  );
  return { url: `${inside} (forwarded from netns ${ns})`, stop: () => child.kill() };
}

/** The artifacts' paths, and the backend's options that write them. */
interface Artifacts {
  messages: string;
  rings: string;
  capture: string;
  faults: string;
  console: string;
}

function backendArgs(o: GuestRunOptions, out: string): { files: Artifacts; args: string[] } {
  const files: Artifacts = {
    messages: join(out, 'messages.jsonl'),
    rings: join(out, 'rings.jsonl'),
    capture: join(out, 'capture.pcapng'),
    faults: join(out, 'faults.jsonl'),
    console: join(out, 'console.log'),
  };
  const queues = o.queues ?? 1;
  const args = [
    '--http',
    `127.0.0.1:${HTTP_PORT}`,
    '--trace-messages',
    files.messages,
    '--trace-rings',
    files.rings,
    '--pcap',
    files.capture,
    '--fault-log',
    files.faults,
    '--ring',
    o.ring ?? 'split',
    '--queues',
    String(queues),
  ];
  if (o.faults) {
    copyFileSync(o.faults, join(out, 'plan.json'));
    args.push('--faults', join(out, 'plan.json'));
  }
  return { files, args };
}

export async function runGuest(o: GuestRunOptions): Promise<number> {
  requireRoot('vhost-user-net guest');
  if (!!o.run === !!o.shell) throw new Error('give either --run CMD or --shell');
  const kernel = resolveKernel(o.kernel);
  const out = resolve(o.out ?? mkdtempSync(join(tmpdir(), 'vun-guest-run-')));
  mkdirSync(out, { recursive: true });
  const { files, args } = backendArgs(o, out);
  const queues = o.queues ?? 1;
  const cleanups: (() => void | Promise<void>)[] = [];
  try {
    const { ns, sock } = await hostEnd(cleanups, { args, quiet: true });
    const http = forwardHttp(ns.name);
    if (http.stop) cleanups.push(http.stop);
    say(
      `vhost-user-net guest: kernel ${kernel.label} (${kernel.release}), ${o.ring ?? 'split'} rings, ${queues} queue pair(s)`,
    );
    say(`  host end:      netns ${ns.name}, TAP vun0 = ${HOST_IP}, guest eth0 = ${GUEST_IP}`);
    say(`  message trace: ${files.messages}   (vhost-user-net explain ${files.messages})`);
    say(`  ring trace:    ${files.rings}`);
    say(`  capture:       ${files.capture}   (tshark -r ${files.capture})`);
    say(`  fault log:     ${files.faults}${o.faults ? '' : ' (no plan)'}`);
    say(`  ring page:     ${http.url}`);
    if (!o.shell) say(`  console:       ${files.console}`);
    const guestOpts = {
      socketPath: sock,
      ip: `${GUEST_IP}/24`,
      kernel,
      kernelLog: true,
      packed: o.ring === 'packed',
      queuePairs: queues,
      ...(queues > 1 ? { smp: 2 } : {}),
    };
    if (o.shell) return await shell(guestOpts, cleanups);
    const g = bootGuest({ ...guestOpts, script: `(\n${o.run}\n)\nrc=$?\nres vun-run $rc\nexit $rc\n` });
    cleanups.push(() => g.cleanup());
    let shown = 0;
    const echo = () => {
      // The guest's own output as it comes (our VUN- lines are the runner's, not the user's).
      const lines = g.qemu.output.split('\n');
      for (; shown < lines.length - 1; shown++) {
        const l = lines[shown] as string;
        if (!/^VUN-/.test(l)) process.stdout.write(`${l}\n`);
      }
    };
    const timer = setInterval(echo, 200);
    try {
      await waitFor(
        () => g.qemu.output.includes('VUN-DONE') || !g.qemu.running,
        (o.timeoutS ?? 600) * 1000,
        'the guest',
      );
    } finally {
      clearInterval(timer);
      echo();
    }
    writeFileSync(files.console, g.qemu.output);
    const rep = kernelReport(g.qemu.output);
    if (rep.missing.length) {
      say(
        `vhost-user-net guest: kernel ${kernel.label} lacks ${rep.missing.join(', ')} (a virtio-net guest needs them =y, or =m with --modules DIR)`,
      );
      return 2;
    }
    const r = guestResults(g.qemu.output).get('vun-run');
    if (!r) {
      say(`vhost-user-net guest: the guest did not finish the command (console: ${files.console})`);
      return 1;
    }
    return r.rc;
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

/** The guest's serial console on this terminal (QEMU's -serial mon:stdio; Ctrl-A X quits QEMU). */
async function shell(
  g: Omit<Parameters<typeof scenarioBoot>[0], 'script'> & {
    socketPath: string;
    packed: boolean;
    queuePairs: number;
    smp?: number;
  },
  cleanups: (() => void | Promise<void>)[],
): Promise<number> {
  const boot = scenarioBoot({
    ...g,
    script: 'echo "vhost-user-net guest: exit the shell to power off"\nsetsid cttyhack sh -l\n',
  });
  cleanups.push(() => rmSync(boot.dir, { recursive: true, force: true }));
  const argv = qemuArgs({ ...g, guest: boot }).map((a) => (a === 'stdio' ? 'mon:stdio' : a));
  say(`  (the guest's console follows, and is not kept: exit its shell to stop, or Ctrl-A X)`);
  const child = spawn('qemu-system-x86_64', argv, { stdio: 'inherit' });
  cleanups.push(() => {
    if (child.exitCode === null) child.kill();
  });
  return await new Promise<number>((res) => child.once('exit', (c) => res(c ?? 1)));
}
