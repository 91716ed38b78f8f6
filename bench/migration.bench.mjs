// Benchmark: live migration on this host (src/guest/migration.ts). The same guest, bridge and
// traffic (pings every 50 ms, iperf3 TCP) migrated with our backends (one process and TAP per
// side) and, alternately in the same run, with QEMU's own virtio-net on TAPs (-netdev
// tap,vhost=off): the anchor, which migrates without any backend. Reports QEMU's downtime, the
// longest gap the guest saw between ping replies, pings lost, the migration's total time, and
// whether the first frame the bridge got from the guest on the new port was the RARP.
import { runMigration } from '../dist/guest/migration.js';
import { RUNS, save } from './lib.mjs';

const runs = Number(process.env.VUN_BENCH_MIGRATIONS ?? Math.max(RUNS, 5));
const pick = (r) => ({
  status: r.status,
  downtimeMs: r.downtimeMs,
  totalMs: r.totalMs,
  longestGapMs: r.longestGapMs,
  pingsLost: r.pingsSent - r.pingsAnswered,
  pingsSent: r.pingsSent,
  iperfRc: r.iperf.rc,
  fdbPort: r.fdbPort,
  firstFrameType: r.firstFrameType,
});
const ours = [];
const qemu = [];
for (let i = 0; i < runs; i++) {
  ours.push(pick(await runMigration({ frontend: 'vhost-user' })));
  qemu.push(pick(await runMigration({ frontend: 'qemu-tap' })));
}
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1] };
};
const summary = (rs) => ({
  completed: rs.filter((r) => r.status === 'completed').length,
  downtimeMs: stats(rs.map((r) => r.downtimeMs)),
  longestGapMs: stats(rs.map((r) => r.longestGapMs)),
  pingsLost: stats(rs.map((r) => r.pingsLost)),
  totalMs: stats(rs.map((r) => r.totalMs)),
  rarpFirst: rs.filter((r) => r.firstFrameType === '0x8035').length,
});
const res = save('migration', {
  description:
    'Live migration of a TCG Linux guest (256 MiB, pinging every 50 ms and running iperf3) between two QEMUs on this host over a unix socket; ours = one vhost-user-net process and TAP per side, anchor = QEMU virtio-net on TAPs (vhost=off); both TAPs in one bridge; alternating runs',
  runs,
  ours: summary(ours),
  qemuTap: summary(qemu),
  oursRuns: ours,
  qemuRuns: qemu,
});
console.error(
  `migration: ours downtime ${res.ours.downtimeMs.median} ms (gap ${res.ours.longestGapMs.median} ms, lost ${res.ours.pingsLost.median}), QEMU tap ${res.qemuTap.downtimeMs.median} ms (gap ${res.qemuTap.longestGapMs.median} ms, lost ${res.qemuTap.pingsLost.median})`,
);
console.log(String(res.ours.longestGapMs.median));
