/**
 * A live migration on this host, as an operator would run one: two QEMUs (the source and an
 * `-incoming` destination), each on its own backend process and TAP, both TAPs in one Linux
 * bridge inside a network namespace we create, with the host's address on the bridge. The
 * guest pings the host every 50 ms and moves TCP (iperf3) while QMP `migrate` runs.
 *
 * What it reports: QEMU's own figures (status, downtime, total time), what the guest saw
 * (pings sent and answered, the longest gap between answers, iperf3's result), where the
 * bridge's forwarding entry for the guest MAC points after the switch, and the first frame
 * the destination TAP carried from the guest MAC (the RARP, when the announce did its job).
 * Used by guest-tests/migration.test.ts and bench/migration.bench.mjs.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proc } from '../util/proc.js';
import { waitFor } from '../util/wait.js';
import { bootGuest, guestResults, Netns, requireRoot, startBackend, waitForLink } from './guest.js';
import { Qmp } from './qmp.js';
import { startQemu } from './qemu.js';

export const GUEST_MAC = '52:54:00:12:34:56';
const HOST_IP = '10.78.0.1';
/** Set, so that it stays put when ports join (a bridge takes its lowest port's MAC otherwise). */
const BRIDGE_MAC = '02:00:00:78:00:01';
const GUEST_IP = '10.78.0.2';
/** Guest ping interval (ms) and count: about 15 s of pings around the migration. */
export const PING_MS = 50;
const PING_COUNT = 300;

/**
 * Guest RAM on both sides at the handover: the source's after it stopped, the destination's
 * before it started. Equal when the destination starts from the source's memory, the device's
 * writes included (whether the dirty log or QEMU's own copying carried them: docs/migration.md).
 */
export interface RamCheck {
  /** 4 KiB pages compared. */
  pages: number;
  /** Guest physical addresses of the pages that differ (the first 32) and how many there are. */
  differing: string[];
  count: number;
  /** Of those, the pages that hold a vring (descriptor table, avail or used ring). */
  ringPages: string[];
  /**
   * For each of those, how many differing bytes fall in each part of a vring (`q1.avail`), and
   * in the rest of the page (`outside`).
   */
  ringBytes: { page: string; parts: Record<string, number> }[];
  /**
   * The ring pages with a differing byte in a part the device writes (the split ring's used
   * ring). The guest alone writes descriptor tables and avail rings, so a stale one there was
   * lost by QEMU's own copying, not by the device's dirty log.
   */
  deviceRingPages: string[];
}

/** A part of a vring in guest physical memory; `device` when the device writes it. */
export interface RingPart {
  start: bigint;
  end: bigint;
  name: string;
  device: boolean;
}

const PAGE = 4096;

/** Compares two RAM images page by page, and byte by byte within the pages a vring touches. */
export function comparePages(a: Buffer, b: Buffer, rings: RingPart[]): RamCheck {
  const pages = Math.min(a.length, b.length) / PAGE;
  const differing: string[] = [];
  const ringPages: string[] = [];
  const ringBytes: RamCheck['ringBytes'] = [];
  const deviceRingPages: string[] = [];
  let count = 0;
  for (let p = 0; p < pages; p++) {
    const o = p * PAGE;
    if (a.compare(b, o, o + PAGE, o, o + PAGE) === 0) continue;
    count++;
    const gpa = BigInt(o);
    const hex = `0x${gpa.toString(16)}`;
    if (differing.length < 32) differing.push(hex);
    const touching = rings.filter((r) => gpa < r.end && gpa + BigInt(PAGE) > r.start);
    if (touching.length === 0) continue;
    ringPages.push(hex);
    const parts: Record<string, number> = {};
    let device = false;
    for (let i = o; i < o + PAGE; i++) {
      if (a[i] === b[i]) continue;
      const at = BigInt(i);
      const part = touching.find((r) => at >= r.start && at < r.end);
      const name = part?.name ?? 'outside';
      parts[name] = (parts[name] ?? 0) + 1;
      if (part?.device) device = true;
    }
    ringBytes.push({ page: hex, parts });
    if (device) deviceRingPages.push(hex);
  }
  return { pages, differing, count, ringPages, ringBytes, deviceRingPages };
}

export interface MigrationResult {
  /** QEMU's query-migrate after the end: 'completed' when it worked. */
  status: string;
  /** QEMU's downtime (ms): from the source's stop to the destination's start. */
  downtimeMs: number;
  totalMs: number;
  ramTransferredBytes: number;
  /** The destination's run state once the source reported completion. */
  destinationStatus: string;
  /** Guest pings to the host: sent, answered, and the longest gap between answers (ms). */
  pingsSent: number;
  pingsAnswered: number;
  /** The unanswered echo requests, as icmp_seq ranges ("" when none). */
  pingsLost: string;
  /** Each TAP's counters at the end (ip -s link): frames the host could not queue, and so on. */
  taps: Record<string, unknown>;
  longestGapMs: number;
  /** iperf3 (guest to host) across the migration: exit code and receiver line. */
  iperf: { rc: number; text: string };
  /** The bridge port of the guest MAC, read right after completion. */
  fdbPort: string | undefined;
  /** The first frame the destination's TAP carried from the guest MAC: its ethertype. */
  firstFrameType: string | undefined;
  capture?: string;
  /** Host pings the guest after the migration (through the destination). */
  hostPingRc: number | null;
  /** With `verifyRam`: the source's and destination's RAM compared at the handover. */
  ram?: RamCheck;
  /** The backends' logs (the destination's says SEND_RARP) and the whole consoles, for reports. */
  logs: { source: string; destination: string; sourceConsole: string; destinationConsole: string };
}

const SCRIPT = `
H=${HOST_IP}
ping -c 3 -W 3 $H > /tmp/p0 2>&1; res first-ping $?
phase traffic
iperf3 -c $H -t 12 -f m > /tmp/i 2>&1 &
IPERF=$!
/usr/bin/ping -D -i ${PING_MS / 1000} -c ${PING_COUNT} -W 1 $H > /tmp/p 2>&1
res ping $? "$(grep -E 'packets transmitted' /tmp/p)"
# Which echo requests went unanswered, as ranges of icmp_seq (a loss says where it fell).
res lost 0 "$(awk -v n=${PING_COUNT} '/bytes from/ { split($0, f, "icmp_seq="); split(f[2], g, " "); seen[g[1] + 0] = 1 } END { for (i = 1; i <= n + 1; i++) { if (i <= n && !(i in seen)) { if (!a) a = i; b = i } else if (a) { printf "%d-%d ", a, b; a = 0 } } }' /tmp/p)"
res gap 0 "$(awk '/bytes from/ { t = substr($1, 2, length($1) - 2) + 0; if (p > 0 && t - p > m) m = t - p; p = t } END { printf "%d", m * 1000 }' /tmp/p)"
wait $IPERF; res iperf $? "$(grep receiver /tmp/i | tail -1)"
# The host pings the guest through the destination: stay up until three echo requests came
# (Icmp InEchos in /proc/net/snmp), or 15 s.
echos() { awk '$1 == "Icmp:" && $2 != "InMsgs" { print $10 }' /proc/net/snmp; }
e0=$(echos)
phase host-ping
i=0; while [ $i -lt 15 ] && [ $(( $(echos) - e0 )) -lt 3 ]; do sleep 1; i=$((i + 1)); done
`;

function parsePing(text: string): { sent: number; answered: number } {
  const m = /(\d+) packets transmitted, (\d+) received/.exec(text);
  return { sent: Number(m?.[1] ?? 0), answered: Number(m?.[2] ?? 0) };
}

/** Runs one migration; everything it starts is stopped (by pid) and removed before it returns. */
export async function runMigration(
  o: {
    /** vhost-user: our backends (default); qemu-tap: QEMU's own virtio-net, the anchor. */
    frontend?: 'vhost-user' | 'qemu-tap';
    datapath?: 'native' | 'ts';
    backendArgs?: string[];
    /**
     * Compare guest RAM at the handover (see RamCheck): the destination starts paused (-S),
     * both sides are dumped (QMP pmemsave), then the destination is started. The guest stands
     * still for the dumps (about 1.5 s), so a benchmark of the switch leaves this off.
     */
    verifyRam?: boolean;
  } = {},
): Promise<MigrationResult> {
  requireRoot('the migration scenario');
  const cleanups: (() => unknown)[] = [];
  try {
    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const dir = mkdtempSync(join(tmpdir(), 'vun-migrate-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    ns.sh(
      `ip link add br0 address ${BRIDGE_MAC} type bridge && ip link set br0 up && ip addr add ${HOST_IP}/24 dev br0`,
    );
    // ours: a backend process per side, each creating its TAP. qemu-tap (the anchor): QEMU's
    // own virtio-net on a TAP we create (-netdev tap,vhost=off), QEMU inside the namespace.
    const ours = (o.frontend ?? 'vhost-user') === 'vhost-user';
    const args = ['--datapath', o.datapath ?? 'native', ...(o.backendArgs ?? [])];
    const sides = (['A', 'B'] as const).map((side) => {
      const sock = join(dir, `vhost-${side}.sock`);
      const tap = `vun${side}`;
      let proc: Proc | undefined;
      if (ours) {
        proc = startBackend(ns, sock, ['--backend', `tap:${tap}`, ...args]);
        const p = proc;
        cleanups.push(() => p.stop());
      } else {
        ns.sh(`ip tuntap add dev ${tap} mode tap vnet_hdr`);
      }
      return { side, sock, proc, tap };
    });
    for (const b of sides) {
      await waitForLink(ns, b.tap);
      ns.sh(`ip link set ${b.tap} master br0 && ip link set ${b.tap} up`);
    }
    const [src, dst] = sides as [(typeof sides)[0], (typeof sides)[0]];
    const net = (tap: string, sock: string) =>
      ours ? { socketPath: sock } : { socketPath: '', builtinTap: tap, netns: ns.name };
    const iperf = ns.spawn('iperf3', ['-s', '-B', HOST_IP]);
    cleanups.push(() => iperf.stop());

    // The first frame the destination's TAP brought into the bridge from the guest MAC: a RARP,
    // or a frame for the host (which the bridge never sends out of a port, so it came from the
    // backend). Flooded guest broadcasts leave through vunB too; they are not counted.
    const cap = ns.spawn('tshark', [
      '-i',
      dst.tap,
      '-c',
      '20',
      '-f',
      `ether src ${GUEST_MAC} and (ether proto 0x8035 or ether dst ${BRIDGE_MAC})`,
      '-T',
      'fields',
      '-e',
      'frame.time_epoch',
      '-e',
      'eth.type',
    ]);
    cleanups.push(() => cap.stop());
    await waitFor(() => /Capture started/.test(cap.output), 15_000, 'tshark capturing');

    const qmpSrc = join(dir, 'qmp-src.sock');
    const qmpDst = join(dir, 'qmp-dst.sock');
    const migSock = join(dir, 'migrate.sock');
    const guest = bootGuest({
      ...net(src.tap, src.sock),
      script: SCRIPT,
      ip: `${GUEST_IP}/24`,
      extraArgs: ['-qmp', `unix:${qmpSrc},server=on,wait=off`],
    });
    cleanups.push(() => guest.cleanup());
    // The destination: the same machine and guest files, waiting for the migration stream.
    const dest: Proc = startQemu({
      ...net(dst.tap, dst.sock),
      guest: guest.guest,
      extraArgs: [
        '-qmp',
        `unix:${qmpDst},server=on,wait=off`,
        '-incoming',
        `unix:${migSock}`,
        ...(o.verifyRam ? ['-S'] : []),
      ],
    });
    cleanups.push(() => dest.stop());
    const qs = await Qmp.open(qmpSrc);
    cleanups.push(() => qs.close());
    const qd = await Qmp.open(qmpDst);
    cleanups.push(() => qd.close());

    await guest.phase('traffic');
    // Let ping and TCP run a while on the source before moving.
    await new Promise((r) => setTimeout(r, 3000));
    await qs.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 1024 * 1024 * 1024, 'downtime-limit': 300 });
    await qs.execute('migrate', { uri: `unix:${migSock}` });
    let info: Record<string, unknown> = {};
    const end = Date.now() + 120_000;
    for (;;) {
      info = await qs.execute<Record<string, unknown>>('query-migrate');
      if (['completed', 'failed', 'cancelled'].includes(String(info.status)) || Date.now() > end) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    let ramCheck: RamCheck | undefined;
    if (o.verifyRam && info.status === 'completed') {
      ramCheck = await compareRam(qs, qd, dir);
      await qd.execute('cont');
    }
    const fdb = ns.try(`bridge fdb show br br0 | grep -i '${GUEST_MAC}' | grep -v permanent`).out;
    const fdbPort = /dev (\S+)/.exec(fdb)?.[1];
    const destinationStatus = String((await qd.execute<{ status: string }>('query-status')).status);
    // The source has handed over: stop it so only the destination's guest runs.
    await guest.qemu.stop();

    // The guest's scenario goes on on the destination's console.
    const doneBy = Date.now() + 90_000;
    const reached = (s: string) => () => dest.output.includes(s) || !dest.running || Date.now() > doneBy;
    // The guest waits for the host's pings before it powers off.
    await waitFor(reached('VUN-PHASE host-ping'), 95_000, 'the guest on the destination');
    const hostPing = ns.try(`ping -c 3 -i 0.2 -W 3 ${GUEST_IP}`);
    await waitFor(reached('VUN-DONE'), 95_000, 'the guest on the destination');
    await Promise.race([cap.exited, new Promise((r) => setTimeout(r, 2000))]);
    const r = guestResults(dest.output);
    const ping = parsePing(r.get('ping')?.text ?? '');
    const taps: Record<string, unknown> = {};
    for (const b of sides) {
      const j = ns.try(`ip -s -j link show ${b.tap}`).out;
      try {
        const s = (JSON.parse(j) as { stats64?: Record<string, unknown> }[])[0]?.stats64;
        taps[b.tap] = s ?? j;
      } catch {
        taps[b.tap] = j;
      }
    }
    const ram = (info.ram ?? {}) as { transferred?: number };
    return {
      status: String(info.status),
      downtimeMs: Number(info.downtime ?? -1),
      totalMs: Number(info['total-time'] ?? -1),
      ramTransferredBytes: Number(ram.transferred ?? 0),
      destinationStatus,
      pingsSent: ping.sent,
      pingsAnswered: ping.answered,
      pingsLost: (r.get('lost')?.text ?? '?').trim(),
      taps,
      longestGapMs: Number(r.get('gap')?.text ?? -1),
      iperf: r.get('iperf') ?? { rc: -999, text: 'missing' },
      fdbPort,
      firstFrameType: /^\S+\s+(0x[0-9a-f]{4})$/im.exec(cap.output)?.[1],
      capture: cap.output,
      hostPingRc: hostPing.status,
      ...(ramCheck ? { ram: ramCheck } : {}),
      logs: {
        source: src.proc?.tail(30) ?? '',
        destination: dst.proc?.tail(30) ?? '',
        sourceConsole: guest.qemu.output,
        destinationConsole: dest.output,
      },
    };
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

/** Both sides stand still: the source after completion, the destination before its start. */
async function compareRam(qs: Qmp, qd: Qmp, dir: string): Promise<RamCheck> {
  const status = (await qd.execute<{ status: string }>('query-status')).status;
  if (status !== 'paused') throw new Error(`the destination should wait paused (-S) for the RAM check: ${status}`);
  // Where the vrings are, as the guest programmed them (QEMU's own view of the device).
  const devices = await qs.execute<{ name: string; path: string }[]>('x-query-virtio');
  const net = devices.find((d) => d.name === 'virtio-net');
  const rings: RingPart[] = [];
  for (let queue = 0; net; queue++) {
    let q: Record<string, number>;
    try {
      q = await qs.execute<Record<string, number>>('x-query-virtio-queue-status', { path: net.path, queue });
    } catch {
      break; // past the last queue
    }
    const num = BigInt(q['vring-num'] ?? 0);
    if (num === 0n) break;
    const at = (k: string) => BigInt(q[k] ?? 0);
    // Split rings (the migration guest does not ask for packed=on): the guest writes the
    // descriptor table and the avail ring (used_event included), the device the used ring
    // (avail_event included). virtio-v1.2 2.7.
    const part = (key: string, size: bigint, name: string, device: boolean) =>
      rings.push({ start: at(key), end: at(key) + size, name: `q${queue}.${name}`, device });
    part('vring-desc', 16n * num, 'desc', false);
    part('vring-avail', 6n + 2n * num, 'avail', false);
    part('vring-used', 6n + 8n * num, 'used', true);
  }
  const size = (await qs.execute<{ 'base-memory': number }>('query-memory-size-summary'))['base-memory'];
  const files = [join(dir, 'ram-source'), join(dir, 'ram-destination')];
  await qs.execute('pmemsave', { val: 0, size, filename: files[0] });
  await qd.execute('pmemsave', { val: 0, size, filename: files[1] });
  try {
    return comparePages(readFileSync(files[0] as string), readFileSync(files[1] as string), rings);
  } finally {
    for (const f of files) rmSync(f, { force: true });
  }
}
