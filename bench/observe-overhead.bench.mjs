// Benchmark 5: what observation costs the C++ data path. guest-TX 64 B through the null backend
// (as benchmark 1), four builds/settings alternated in one invocation:
//   baseline  - the tree before observation existed (git rev VUN_BASELINE_REV, built here in a
//               temporary worktree),
//   off       - this tree, capture and ring trace off (the target: no measurable drop),
//   pcap      - this tree with --pcap (to a file on tmpfs when /dev/shm exists),
//   trace     - this tree with --trace-rings (every ring step recorded).
// Prints off/baseline.
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

const BASELINE = process.env.VUN_BASELINE_REV ?? '71e58487d9d8d4904501da203585a4a43ce8c993';

async function one(impl, baseDir) {
  const t = tmp();
  const sock = join(t.dir, 'vhost.sock');
  const capDir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/vun-bench-') : t.dir;
  const extra =
    impl === 'pcap'
      ? ['--pcap', join(capDir, 'cap.pcapng'), '--pcap-snaplen', '64', '--pcap-max-mb', '64', '--pcap-files', '2']
      : impl === 'trace'
        ? ['--trace-rings', join(capDir, 'rings.jsonl')]
        : [];
  const backend = ourBackend({
    socket: sock,
    backend: 'null',
    cores: '0',
    extra,
    tree: impl === 'baseline' ? baseDir : root,
  });
  await waitForFile(sock);
  const fe = virtioUserFrontend(sock, 'txonly', 64);
  await sleep((SECONDS + 2) * 1000);
  await fe.stop();
  await backend.stop();
  t.cleanup();
  if (capDir !== t.dir) rmSync(capDir, { recursive: true, force: true });
  const s = steady(ppsSamples(fe.out, 'Tx'));
  if (!s.n) throw new Error(`${impl}: no samples\n${fe.out.slice(-1500)}\n${backend.out.slice(-1500)}`);
  return s.median;
}

const base = buildTree(BASELINE);
const impls = ['baseline', 'off', 'pcap', 'trace'];
const runs = Object.fromEntries(impls.map((i) => [i, []]));
try {
  for (let r = 0; r < RUNS; r++) for (const i of impls) runs[i].push(await one(i, base.dir));
} finally {
  base.remove();
}
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const m = Object.fromEntries(impls.map((i) => [i, med(runs[i]) / 1e6]));
const r = save('observe-overhead', {
  description: `testpmd virtio_user txonly 64 B (core 1) into vhost-user-net's null backend (core 0): the tree at ${BASELINE} (before observation) against this tree with observation off, with --pcap (snaplen 64, tmpfs), and with --trace-rings`,
  baselineRev: BASELINE,
  runs: RUNS,
  mpps: m,
  spreads: Object.fromEntries(impls.map((i) => [i, runs[i].map((x) => x / 1e6)])),
  offVsBaseline: m.off / m.baseline,
  pcapVsOff: m.pcap / m.off,
  traceVsOff: m.trace / m.off,
});
console.error(
  `observation: baseline ${m.baseline.toFixed(2)}, off ${m.off.toFixed(2)}, pcap ${m.pcap.toFixed(2)}, trace ${m.trace.toFixed(2)} Mpps`,
);
console.log(r.offVsBaseline.toFixed(3));
