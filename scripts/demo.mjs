// The main job of the foundation release: start the backend, attach a real QEMU to it, and
// show the vhost-user conversation as it happens. The guest is QEMU's own firmware (iPXE),
// which drives virtio-net far enough to negotiate, map memory and start the rings.
// (The Linux guest with traffic arrives with the data path, issue #3.)
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { VhostUserNetBackend } from '../dist/backend.js';
import { featureNames, hex, ProtocolFeature, VirtioFeature } from '../dist/features.js';
import { silentLogger } from '../dist/log.js';
import { requestName } from '../dist/vhost-user/codec.js';

const dir = mkdtempSync(join(tmpdir(), 'vun-demo-'));
const sock = join(dir, 'vhost-user.sock');
const t0 = Date.now();
const stamp = () => `${((Date.now() - t0) / 1000).toFixed(3).padStart(7)}s`;

const backend = new VhostUserNetBackend(
  { socketPath: sock, client: false, socketMode: 0o600, queuePairs: 1, reconnectMinMs: 100, reconnectMaxMs: 1000 },
  silentLogger(),
);
backend.on('session', (s) => {
  console.log(`${stamp()}  QEMU connected: session started`);
  s.onChange((c) => {
    const { what, ...rest } = c;
    const extra = Object.entries(rest)
      .filter(([k]) => k !== 'names')
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    console.log(`${stamp()}      * ${what}${extra ? `  (${extra})` : ''}`);
  });
});
backend.on('message', (_s, h) =>
  console.log(`${stamp()}  <- ${requestName(h.request)}${h.needReply ? '  [need_reply]' : ''}`),
);
backend.start();
console.log(`vhost-user-net listening on ${sock}`);

const qemuArgs = [
  '-machine',
  'q35',
  '-accel',
  'tcg,thread=multi',
  '-cpu',
  'max',
  '-m',
  '256M',
  '-object',
  'memory-backend-memfd,id=mem,size=256M,share=on',
  '-numa',
  'node,memdev=mem',
  '-chardev',
  `socket,id=c0,path=${sock}`,
  '-netdev',
  'vhost-user,id=n0,chardev=c0',
  '-device',
  'virtio-net-pci,netdev=n0,vectors=0,mac=52:54:00:12:34:56',
  '-display',
  'none',
  '-nodefaults',
  '-serial',
  'none',
  '-monitor',
  'none',
  '-boot',
  'n',
];
console.log(`starting: qemu-system-x86_64 ${qemuArgs.join(' ')}\n`);
const qemu = spawn('qemu-system-x86_64', qemuArgs, { stdio: ['ignore', 'inherit', 'inherit'] });
let qemuExited = false;
qemu.once('exit', () => (qemuExited = true));

const deadline = Date.now() + 60_000;
while (Date.now() < deadline && !qemuExited) {
  const s = backend.session;
  if (s && s.vrings[0]?.started) break;
  await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 1500));
const s = backend.session;
let ok = false;
if (s) {
  ok = s.vrings[0]?.started === true || s.vrings.some((v) => v.lastAvailIdx > 0);
  console.log('\nsession state:');
  console.log(
    `  features acked:          ${hex(s.ackedFeatures ?? 0n)} ${featureNames(s.ackedFeatures ?? 0n, VirtioFeature).join(' ')}`,
  );
  console.log(
    `  protocol features acked: ${hex(s.ackedProtocolFeatures)} ${featureNames(s.ackedProtocolFeatures, ProtocolFeature).join(' ')}`,
  );
  for (const r of s.memory.regions) {
    console.log(
      `  memory region: gpa ${hex(r.guestAddr)} size ${hex(r.size)} (${Number(r.size) >> 20} MiB) qemu va ${hex(r.userAddr)}`,
    );
  }
  for (const v of s.vrings) {
    const role = v.index % 2 === 0 ? 'receiveq' : 'transmitq';
    console.log(
      `  vring ${v.index} (${role}${v.index >> 1}): size ${v.num} lastAvailIdx ${v.lastAvailIdx} started ${v.started} enabled ${s.isEnabled(v)}`,
    );
  }
  console.log('\nThis release has no data path yet: rings start and stop, frames are not moved.');
}
if (!qemuExited) process.kill(qemu.pid, 'SIGTERM');
await new Promise((r) => (qemuExited ? r() : qemu.once('exit', r)));
backend.stop();
if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
if (!ok) {
  console.error('demo: the guest driver never started a ring');
  process.exitCode = 1;
}
