/**
 * `vhost-user-net lab`: a live guest to watch. The backend runs with every observer on (the
 * message trace, the ring trace, the capture, HTTP with the ring page and its player) and a
 * Linux guest under QEMU stays up on it until Ctrl-C. The host end of the guest's network is a
 * TAP in a network namespace of our own (`vun-lab`), so traffic goes nowhere else; the backend
 * itself runs in the host's namespace so a browser, curl and `status` on this machine reach
 * its HTTP endpoint. The guest runs an iperf3 server and a shell on a second serial port, a
 * unix socket here. It prints the URLs, the files and the commands to try, all copy-paste;
 * docs/learn-virtio.md walks through them (and a test runs that walk-through).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, Netns, requireRoot } from '../guest/guest.js';
import { packageRoot } from '../native.js';
import { Proc } from '../util/proc.js';
import { waitFor } from '../util/wait.js';

export const LAB = {
  netns: 'vun-lab',
  dir: '/tmp/vun-lab',
  tap: 'vunlab0',
  hostIp: '10.77.0.1',
  guestIp: '10.77.0.2',
  http: '127.0.0.1:9180',
} as const;

export interface LabOptions {
  datapath?: 'native' | 'ts';
  /** packed=on: QEMU offers the packed ring (the backend offers it by default). */
  packed?: boolean;
  queuePairs?: number;
  /** Resolves to stop the lab (Ctrl-C when not given). */
  until?: Promise<unknown>;
}

const say = (s: string) => process.stdout.write(`${s}\n`);

/** The guest's part: an iperf3 server, a shell on ttyS1 (again after each exit), then wait. */
const GUEST_SCRIPT = `
iperf3 -s -D
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
( while true; do setsid sh -c 'exec sh -i <>/dev/ttyS1 >&0 2>&1'; done ) &
phase lab-ready
while true; do sleep 3600; done
`;

export function labFiles(dir: string = LAB.dir) {
  return {
    socket: join(dir, 'vhost-user.sock'),
    messages: join(dir, 'messages.jsonl'),
    rings: join(dir, 'rings.jsonl'),
    capture: join(dir, 'capture.pcapng'),
    shell: join(dir, 'shell.sock'),
    log: join(dir, 'backend.log'),
  };
}

export async function runLab(opts: LabOptions = {}): Promise<number> {
  requireRoot('the lab');
  if (spawnSync('ip', ['netns', 'pids', LAB.netns]).status === 0) {
    say(
      `vhost-user-net lab: network namespace ${LAB.netns} exists: a lab is running, or a stale one (ip netns del ${LAB.netns})`,
    );
    return 1;
  }
  const cleanups: (() => void | Promise<void>)[] = [];
  const f = labFiles();
  try {
    rmSync(LAB.dir, { recursive: true, force: true });
    mkdirSync(LAB.dir, { recursive: true });
    const ns = new Netns(LAB.netns);
    cleanups.push(() => ns.delete());
    const bin = join(packageRoot, 'bin', 'vhost-user-net.js');
    // The backend in the host's namespace (its HTTP reachable here); its TAP moves into ours.
    const backend = new Proc(process.execPath, [
      bin,
      '--socket',
      f.socket,
      '--backend',
      `tap:${LAB.tap}`,
      '--datapath',
      opts.datapath ?? 'ts',
      '--queues',
      String(opts.queuePairs ?? 1),
      '--trace-messages',
      f.messages,
      '--trace-rings',
      f.rings,
      '--pcap',
      f.capture,
      // Headers and the start of each frame: an iperf3 run stays megabytes, not gigabytes.
      '--pcap-snaplen',
      '256',
      '--http',
      LAB.http,
      '--log-level',
      'info',
    ]);
    cleanups.push(() => backend.stop().then(() => undefined));
    await waitFor(() => existsSync(f.socket) || !backend.running, 15_000, 'the backend socket');
    if (!backend.running) {
      say(`vhost-user-net lab: the backend did not start:\n${backend.tail(10)}`);
      return 1;
    }
    spawnSync('ip', ['link', 'set', LAB.tap, 'netns', LAB.netns]);
    ns.sh(`ip link set ${LAB.tap} up && ip addr add ${LAB.hostIp}/24 dev ${LAB.tap}`);
    say('vhost-user-net lab: booting a Linux guest on the backend (built once, then cached) ...');
    const g = bootGuest({
      socketPath: f.socket,
      ip: `${LAB.guestIp}/24`,
      script: GUEST_SCRIPT,
      packed: opts.packed,
      queuePairs: opts.queuePairs,
      extraArgs: [
        '-chardev',
        `socket,id=shell,path=${f.shell},server=on,wait=off`,
        '-device',
        'isa-serial,chardev=shell',
      ],
    });
    cleanups.push(() => g.cleanup());
    await g.phase('lab-ready', 180_000);
    printGuide(opts);
    say('VUN-LAB ready');
    await (opts.until ?? untilSignal());
    say('\nvhost-user-net lab: stopping the guest and the backend; the files stay in ' + LAB.dir);
    return 0;
  } catch (err) {
    say(`vhost-user-net lab: ${(err as Error).message}`);
    return 1;
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

function printGuide(opts: LabOptions): void {
  const f = labFiles();
  const x = `ip netns exec ${LAB.netns}`;
  // From the checkout the commands read as docs/learn-virtio.md has them; elsewhere, whole paths.
  const here = process.cwd() === packageRoot;
  const cli = here ? 'node bin/vhost-user-net.js' : `node ${join(packageRoot, 'bin', 'vhost-user-net.js')}`;
  const lua = here
    ? 'contrib/wireshark/vhost-user-net.lua'
    : join(packageRoot, 'contrib', 'wireshark', 'vhost-user-net.lua');
  say(`
The guest is up: ${LAB.guestIp} on the backend's ${opts.packed ? 'packed' : 'split'} rings (${opts.datapath ?? 'ts'} data path);
the host end is ${LAB.tap} = ${LAB.hostIp} in network namespace ${LAB.netns}.

  watch      http://${LAB.http}/rings.html          (the rings live; the player under them steps through every event)
             ${cli} status --http ${LAB.http}
  traffic    ${x} ping -c 3 ${LAB.guestIp}
             ${x} iperf3 -c ${LAB.guestIp} -t 3        (host to guest: the receiveq)
             ${x} iperf3 -c ${LAB.guestIp} -t 3 -R     (guest to host: the transmitq)
  guest      socat -,raw,echo=0,escape=0x1d UNIX-CONNECT:${f.shell}   (a shell in the guest; Ctrl-] leaves it)
  read       ${cli} explain ${f.messages}
             ${cli} explain ${f.rings} --vring 1
             tshark -X lua_script:${lua} -r ${f.capture} -Y 'vhost_user.request == 2'
  files      ${f.messages}  ${f.rings}  ${f.capture}

Ctrl-C stops the guest and the backend and deletes the namespace; the files stay.`);
}
