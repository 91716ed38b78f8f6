// What writing each frame twice costs the capture (issue 29: the -vnet interfaces carry the
// virtio-net header as bytes next to the plain Ethernet ones). guest-TX 64 B through the null
// backend with --pcap, as benchmark 5 does: the tree before the change (VUN_BEFORE_REV, built
// in a temporary worktree) against this tree, alternated. Prints now/before.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildTree,
  ourBackend,
  ppsSamples,
  root,
  RUNS,
  save,
  SECONDS,
  sleep,
  steady,
  tmp,
  virtioUserFrontend,
  waitForFile,
} from './lib.mjs';

const BEFORE = process.env.VUN_BEFORE_REV ?? '734f90ae57808667fc9fffdb47945e574bfd2d16';

async function one(tree) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const capDir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/vun-bench-') : t.dir;
  const backend = ourBackend({
    socket: sock,
    backend: 'null',
    cores: '0',
    // info: the shutdown line that counts the capture's frames and losses.
    extra: [
      '--pcap',
      join(capDir, 'cap.pcapng'),
      '--pcap-snaplen',
      '64',
      '--pcap-max-mb',
      '64',
      '--pcap-files',
      '2',
      '--log-level',
      'info',
    ],
    tree,
  });
  await waitForFile(sock);
  const fe = virtioUserFrontend(sock, 'txonly', 64);
  await sleep((SECONDS + 2) * 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  if (capDir !== t.dir) rmSync(capDir, { recursive: true, force: true });
  const s = steady(ppsSamples(fe.out, 'Tx'));
  if (!s.n) throw new Error(`no samples\n${fe.out.slice(-1500)}\n${backend.out.slice(-1500)}`);
  // The backend's last word on the capture: frames written and frames lost (the writer behind).
  const closed = backend.out.split('\n').find((l) => l.includes('"msg":"capture closed"'));
  const c = closed ? JSON.parse(closed) : { frames: NaN, lost: NaN };
  return { pps: s.median, written: c.frames, lost: c.lost };
}

const before = buildTree(BEFORE);
const runs = { before: [], now: [] };
const capture = { before: [], now: [] };
try {
  for (let r = 0; r < RUNS; r++) {
    for (const [name, tree] of [
      ['before', before.dir],
      ['now', root],
    ]) {
      const o = await one(tree);
      runs[name].push(o.pps);
      capture[name].push({ written: o.written, lost: o.lost });
    }
  }
} finally {
  before.remove();
}
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const m = { before: med(runs.before) / 1e6, now: med(runs.now) / 1e6 };
const r = save('pcap-headers', {
  description: `testpmd virtio_user txonly 64 B (core 1) into the null backend (core 0) with --pcap (snaplen 64, tmpfs): the tree at ${BEFORE} (one packet per frame) against this tree (each frame also with its header on a -vnet interface, and the vhost-user messages)`,
  beforeRev: BEFORE,
  runs: RUNS,
  mpps: m,
  spreads: { before: runs.before.map((x) => x / 1e6), now: runs.now.map((x) => x / 1e6) },
  nowVsBefore: m.now / m.before,
  // Frames the writer wrote and lost per run (the "now" tree's written count is frames, each
  // written as two packets).
  capture,
});
console.error(`pcap: before ${m.before.toFixed(2)}, now ${m.now.toFixed(2)} Mpps`);
console.log(r.nowVsBefore.toFixed(3));
