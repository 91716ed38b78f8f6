/**
 * The fault suite on a real Linux guest: one condition of ../shared/reference/fault-conditions.md
 * per case (the row number is in the title). Each loads a plan with --faults, lets the guest
 * drive traffic, and asserts the guest's own reaction (kernel log line, counter delta, watchdog)
 * and that the guest did not oops. Each plan skips the first events (`after`), and the guest
 * measures a clean phase first, so the reaction is seen to start with the fault. Results are
 * appended to .test-results/fault-scorecard.jsonl (scripts/fault-scorecard.mjs writes
 * docs/fault-scorecard.md from them).
 *
 * VUN_FAULTS_CONTROL=1 runs every scenario with an empty plan: each reaction check must then
 * fail (the run shows the assertions are caused by the faults; it writes no scorecard).
 */
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../src/util/wait.js';
import type { FaultPlan } from '../../src/faults/plan.js';
import { bootGuest, CACHE, type Netns } from '../../src/guest/guest.js';
import { packageRoot } from '../../src/native.js';
import { tempDir } from '../../test/helpers/harness.js';
import { GUEST_IP, HOST_IP, hostEnd } from '../host-end.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Shell helpers for the guest: counters, /proc/net/snmp fields, kernel log counts. */
const HELPERS = `
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
mount -t debugfs none /sys/kernel/debug 2>/dev/null
echo 'module virtio_net +p' > /sys/kernel/debug/dynamic_debug/control 2>/dev/null
st() { cat /sys/class/net/eth0/statistics/$1; }
snmp() { awk -v p="$1:" -v f="$2" '$1==p && !h {for(i=2;i<=NF;i++) n[i]=$i; h=1; next} $1==p && h {for(i=2;i<=NF;i++) if(n[i]==f) print $i}' /proc/net/snmp; }
klog() { dmesg | grep -c "$1"; }
oops() { dmesg | grep -cE 'Oops|BUG:|kernel panic'; }
`;

interface Condition {
  row: number;
  what: string;
  expected: string;
  plan: FaultPlan;
  script: string;
  iperf?: boolean;
  /** Run on the host end once the guest reaches `phase serve`; its output goes to `check`. */
  host?: string;
  /**
   * A plan loaded over HTTP (PUT /faults) when the guest reaches `phase serve`, made from the
   * session's age then (GET /faults `sessionMs`): how a test places a timed fault.
   */
  midPlan?: (sessionMs: number) => FaultPlan;
  /** QEMU redials the backend (reconnect=1): for faults that close the connection. */
  reconnect?: boolean;
  /**
   * The guest's reaction differs from the reference's expectation, and it stops the guest's
   * script: the test waits for `until` on the console (the kernel log) instead of the script's
   * end, and asserts what is seen there. The scorecard marks the row a finding, not a pass.
   */
  finding?: { until: RegExp };
  /** Asserts the reaction; returns what was observed, for the scorecard. */
  check(r: Map<string, { rc: number; text: string }>, hostOut: string, faults: string[], console: string): string;
}

const HTTP_PORT = 9478;

/** GET or PUT /faults on the backend's HTTP endpoint inside the namespace (node's fetch). */
function faultsRequest(ns: Netns, method: 'GET' | 'PUT', body?: unknown): string {
  const js = `fetch('http://127.0.0.1:${HTTP_PORT}/faults',{method:'${method}'${body ? `,body:process.argv[1]` : ''}}).then(async r=>{const t=await r.text();process.stdout.write(t);process.exit(r.ok?0:1)})`;
  const r = ns.try(`${process.execPath} -e "${js}" '${body ? JSON.stringify(body) : ''}'`);
  if (r.status !== 0) throw new Error(`${method} /faults failed: ${r.out}`);
  return r.out;
}

/**
 * Rows 2 and 4 on Debian 12's 6.1 kernel: the BAD_RING line, then a soft lockup in the receive
 * softirq. virtnet_poll cleans the transmitq too (virtnet_poll_cleantx), in a loop that ends
 * when virtqueue_enable_cb_delayed sees no used entries pending; a broken vq hands out none
 * (virtqueue_get_buf returns NULL), so the loop never ends.
 */
function lockedUp(console: string, badRing: RegExp): string {
  const line = console.split('\n').find((l) => badRing.test(l)) ?? '';
  expect(line, 'the BAD_RING line on the console').not.toBe('');
  const lockup = console.split('\n').find((l) => /soft lockup/.test(l)) ?? '';
  expect(lockup).not.toBe('');
  expect(console, 'the lockup is in virtio_net receive polling').toMatch(/virtnet_poll/);
  const strip = (l: string) => l.replace(/^.*?\]\s*/, '').trim();
  return `"${strip(line)}", then "${strip(lockup)}" in virtnet_poll (virtnet_poll_cleantx spins on the broken transmitq): the guest hangs`;
}

/**
 * Rows 6-9: one lie about a received frame in mergeable mode (the default offer); the guest
 * counts it in `counter` and its driver says `line` (virtio_net's pr_debug lines are on).
 */
function mergeable(
  row: number,
  what: string,
  expected: string,
  rules: FaultPlan['rules'],
  counter: 'rx_length_errors' | 'rx_frame_errors',
  line: string,
): Condition {
  return {
    row,
    what,
    expected,
    plan: { seed: row, rules },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(st ${counter})"
for i in $(seq 8); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; done
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $? "$(st ${counter})"
res log 0 "$(klog '${line}')"
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('clean')?.rc).toBe(0);
      expect(num(r, 'clean')).toBe(0);
      expect(num(r, 'after')).toBeGreaterThanOrEqual(1);
      expect(num(r, 'log')).toBeGreaterThanOrEqual(1);
      expect(r.get('after')?.rc, 'the link keeps working').toBe(0);
      return `${counter} 0 -> ${num(r, 'after')}; dmesg "${line}" x${num(r, 'log')}; pings after it answered`;
    },
  };
}

const num = (r: Map<string, { rc: number; text: string }>, k: string): number => Number(r.get(k)?.text ?? NaN);

const CONDITIONS: Condition[] = [
  {
    row: 1,
    what: 'a receiveq used id >= the queue size',
    expected: 'dmesg "input.0:id 256 out of range"; no oops',
    plan: {
      seed: 1,
      rules: [{ name: 'bad-id', on: 'receiveq0', do: 'used-id', value: 'out-of-range', after: 3, count: 1 }],
    },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(klog 'out of range')"
ping -c 4 -W 2 ${HOST_IP} >/dev/null 2>&1; res faulted $?
res log 0 "$(klog 'input.0:id 256 out of range')"
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('clean')?.rc).toBe(0);
      expect(num(r, 'clean')).toBe(0);
      expect(num(r, 'log')).toBeGreaterThanOrEqual(1);
      return `input.0:id 256 out of range x${num(r, 'log')}`;
    },
  },
  {
    row: 2,
    what: 'a transmitq used id >= the queue size',
    expected: 'dmesg "output.0:id 256 out of range"; transmit stalls; later the TX watchdog',
    finding: { until: /soft lockup/ },
    plan: {
      seed: 2,
      rules: [{ name: 'bad-id', on: 'transmitq0', do: 'used-id', value: 'out-of-range', after: 4, count: 1 }],
    },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
ping -c 4 -W 1 ${HOST_IP} >/dev/null 2>&1
res faulted 0`,
    check: (_r, _h, _f, console) => lockedUp(console, /output\.0:id 256 out of range/),
  },
  {
    row: 4,
    what: 'a transmitq chain completed twice (used-id "repeat")',
    expected: 'dmesg "output.0:id N is not a head!" (the second completion); queue broken; no oops',
    finding: { until: /soft lockup/ },
    plan: {
      seed: 4,
      rules: [{ name: 'twice', on: 'transmitq0', do: 'used-id', value: 'repeat', after: 4, count: 1 }],
    },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
ping -c 4 -W 1 ${HOST_IP} >/dev/null 2>&1
res faulted 0`,
    check: (_r, _h, _f, console) => lockedUp(console, /output\.0:id \d+ is not a head!/),
  },
  {
    row: 3,
    what: "big-buffer mode: a receiveq used id that is a chain's second descriptor, not a head",
    expected: 'dmesg "input.0:id N is not a head!"; receive on that queue stops; no oops',
    plan: {
      seed: 3,
      rules: [
        { name: 'big', on: 'session', do: 'receive-mode', value: 'big' },
        // Direct chains: an indirect one is one descriptor in the ring, with no second.
        { name: 'direct', on: 'session', do: 'offer-mask', value: ['INDIRECT_DESC'] },
        { name: 'second', on: 'receiveq0', do: 'used-id', value: 'not-a-head', after: 3, count: 1 },
      ],
    },
    script: `
f=$(cat /sys/class/net/eth0/device/features); res mode 0 "$(echo $f | cut -c16)$(echo $f | cut -c8)"
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(klog 'is not a head')"
ping -c 4 -W 2 ${HOST_IP} >/dev/null 2>&1
ping -c 2 -W 2 ${HOST_IP} >/dev/null 2>&1; res broken $?
res log 0 "$(klog 'is not a head')"
res line 0 "$(dmesg | grep -m1 'is not a head' | sed 's/^\\[[^]]*\\] //')"
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('mode')?.text, 'big mode: no MRG_RXBUF (bit 15), GUEST_TSO4 (bit 7)').toBe('01');
      expect(r.get('clean')?.rc).toBe(0);
      expect(num(r, 'clean')).toBe(0);
      expect(num(r, 'log')).toBeGreaterThanOrEqual(1);
      expect(r.get('broken')?.rc, 'receive stopped on the broken queue').not.toBe(0);
      return `${r.get('line')?.text.trim()} (x${num(r, 'log')}); pings after it unanswered`;
    },
  },
  {
    row: 5,
    what: 'small-buffer mode: a used len larger than 1518 + the header',
    expected: 'rx_length_errors +1 per frame; frame dropped; link keeps working',
    plan: {
      seed: 5,
      rules: [
        { name: 'small', on: 'session', do: 'receive-mode', value: 'small' },
        { name: 'long', on: 'receiveq0', do: 'used-len', value: '+4096', after: 3, count: 2 },
      ],
    },
    script: `
f=$(cat /sys/class/net/eth0/device/features); res mode 0 "$(echo $f | cut -c16)$(echo $f | cut -c8)$(echo $f | cut -c9)$(echo $f | cut -c10)"
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(st rx_length_errors)"
for i in $(seq 6); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; done
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $? "$(st rx_length_errors)"
res log 0 "$(klog 'exceeds max size')"
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('mode')?.text, 'small mode: no MRG_RXBUF, GUEST_TSO4, GUEST_TSO6, GUEST_ECN').toBe('0000');
      expect(r.get('clean')?.rc).toBe(0);
      expect(num(r, 'clean')).toBe(0);
      expect(num(r, 'after')).toBe(2);
      expect(r.get('after')?.rc, 'the link keeps working').toBe(0);
      return `rx_length_errors 0 -> ${num(r, 'after')} (2 long frames); dmesg "exceeds max size" x${num(r, 'log')}; pings after answered`;
    },
  },
  mergeable(
    6,
    'mergeable mode: a used len larger than the buffer',
    'rx_length_errors +1 ("len N exceeds truesize"); frame dropped; link keeps working',
    [{ name: 'long', on: 'receiveq0', do: 'used-len', value: '+4096', after: 4, count: 1 }],
    'rx_length_errors',
    'exceeds truesize',
  ),
  mergeable(
    7,
    'mergeable mode: num_buffers larger than the buffers completed',
    'rx_length_errors +1 ("N buffers out of M missing"); frame dropped',
    [{ name: 'missing', on: 'receiveq0', do: 'header', field: 'num_buffers', value: 60000, after: 4, count: 1 }],
    'rx_length_errors',
    'buffers out of',
  ),
  mergeable(
    8,
    'a used len shorter than a header and an Ethernet header (a runt)',
    'rx_length_errors +1 ("short packet", pr_debug); frame dropped',
    [{ name: 'runt', on: 'receiveq0', do: 'runt', after: 4, count: 1 }],
    'rx_length_errors',
    'short packet',
  ),
  mergeable(
    9,
    'a receive header with NEEDS_CSUM and csum_start past the frame',
    'rx_frame_errors +1 ("bad gso", once); frame dropped',
    [
      { name: 'csum', on: 'receiveq0', do: 'header', field: 'flags', value: 1, after: 4, count: 1 },
      { name: 'csum-start', on: 'receiveq0', do: 'header', field: 'csum_start', value: 4000, after: 4, count: 1 },
    ],
    'rx_frame_errors',
    'bad gso',
  ),
  {
    row: 11,
    what: 'transmit chains never completed',
    expected: 'dmesg "NETDEV WATCHDOG: eth0 ... transmit queue 0 timed out"; no oops',
    plan: { seed: 1, rules: [{ name: 'keep', on: 'transmitq0', do: 'withhold', after: 4 }] },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(klog 'NETDEV WATCHDOG')"
# One socket stalls on its send buffer once completions stop; many fill the ring.
for i in $(seq 300); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 & done
sleep 15
res log 0 "$(klog 'NETDEV WATCHDOG')"
res timeouts 0 "$(ethtool -S eth0 2>/dev/null | grep -i timeout | tr -s ' ' | tr '\\n' ' ')"
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('clean')?.rc).toBe(0);
      expect(num(r, 'clean')).toBe(0);
      expect(num(r, 'log')).toBeGreaterThanOrEqual(1);
      return `NETDEV WATCHDOG x${num(r, 'log')}; ethtool -S: ${r.get('timeouts')?.text.trim() || '(no timeout counter)'}`;
    },
  },
  {
    row: 10,
    what: 'descriptors the driver posted rewritten in guest memory (addr and len) before completion',
    expected: 'no oops; traffic continues (the driver unmaps from its own copy, desc_extra)',
    plan: {
      seed: 10,
      rules: [
        {
          name: 'rx-addr',
          on: 'receiveq0',
          do: 'desc-rewrite',
          field: 'addr',
          value: '0xdead0000',
          after: 3,
          every: 2,
          count: 10,
        },
        { name: 'rx-len', on: 'receiveq0', do: 'desc-rewrite', field: 'len', value: 1, after: 4, every: 2, count: 10 },
        { name: 'tx-len', on: 'transmitq0', do: 'desc-rewrite', field: 'len', value: 1, after: 3, every: 2, count: 10 },
      ],
    },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
for i in $(seq 20); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; done
ping -c 5 -W 2 ${HOST_IP} > /tmp/p 2>&1; res after $? "$(grep -o '[0-9]* packets received' /tmp/p)"
res oops 0 "$(oops)"`,
    check: (r, _host, faults) => {
      const rewrites = faults.filter((l) => l.includes('"desc-rewrite"')).length;
      expect(rewrites, 'descriptors rewritten').toBeGreaterThanOrEqual(20);
      expect(r.get('after')?.rc, 'traffic continues').toBe(0);
      return `${rewrites} descriptors rewritten (addr, len); ping after: ${r.get('after')?.text}; no oops`;
    },
  },
  {
    row: 12,
    what: 'the vhost-user connection closed (a link flap), then the reconnect served',
    expected: 'carrier goes 0 then 1; carrier_changes grows; traffic resumes',
    plan: { seed: 12, rules: [] },
    reconnect: true,
    midPlan: (ms) => ({
      seed: 12,
      rules: [{ name: 'flap', on: 'session', do: 'disconnect', atMs: Math.round(ms) + 1000, count: 1 }],
    }),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(cat /sys/class/net/eth0/carrier_changes)"
phase serve
down=0; up=0
for i in $(seq 200); do
  c=$(cat /sys/class/net/eth0/carrier 2>/dev/null || echo 0)
  if [ "$c" = 0 ]; then down=1; elif [ $down = 1 ]; then up=1; break; fi
  sleep 0.1
done
res flap 0 "$down$up"
res changes 0 "$(cat /sys/class/net/eth0/carrier_changes)"
ok=1; for i in $(seq 30); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 && { ok=0; break; }; done
res resumed $ok
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('clean')?.rc).toBe(0);
      expect(r.get('flap')?.text, 'carrier seen 0, then 1').toBe('11');
      expect(num(r, 'changes') - num(r, 'clean')).toBeGreaterThanOrEqual(2);
      expect(r.get('resumed')?.rc, 'traffic resumes').toBe(0);
      return `carrier 1 -> 0 -> 1; carrier_changes ${num(r, 'clean')} -> ${num(r, 'changes')}; ping after the reconnect answered`;
    },
  },
  {
    row: 13,
    what: 'a fraction of frames dropped, both directions',
    expected: 'iperf3 completes; Tcp RetransSegs grows',
    iperf: true,
    plan: { seed: 13, rules: [{ name: 'lose', on: '*', do: 'drop', probability: 0.05, after: 4 }] },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(snmp Tcp RetransSegs)"
iperf3 -c ${HOST_IP} -t 4 > /tmp/i 2>&1; res iperf $? "$(grep receiver /tmp/i | tail -1)"
res after 0 "$(snmp Tcp RetransSegs)"
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('iperf')?.rc, r.get('iperf')?.text).toBe(0);
      const before = num(r, 'clean');
      const after = num(r, 'after');
      expect(after).toBeGreaterThan(before);
      return `iperf3 completed (${r.get('iperf')?.text.replace(/\s+/g, ' ').trim()}); RetransSegs ${before} -> ${after}`;
    },
  },
  {
    row: 14,
    what: 'payload bits flipped, no DATA_VALID',
    expected:
      'Icmp InCsumErrors grows by each corrupted reply (the raw socket of ping is given packets before the ICMP layer checks them)',
    plan: { seed: 14, rules: [{ name: 'flip', on: 'receiveq0', do: 'corrupt', after: 2 }] },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(snmp Icmp InCsumErrors)"
ping -c 4 -W 1 ${HOST_IP} > /tmp/p 2>&1; res faulted $? "$(grep -o '[0-9]* packets received' /tmp/p)"
res after 0 "$(snmp Icmp InCsumErrors)"
res oops 0 "$(oops)"`,
    check: (r) => {
      expect(r.get('clean')?.rc).toBe(0);
      const before = num(r, 'clean');
      const after = num(r, 'after');
      expect(after - before).toBeGreaterThanOrEqual(3);
      return `Icmp InCsumErrors ${before} -> ${after}; ping: ${r.get('faulted')?.text}`;
    },
  },
  {
    row: 15,
    what: 'payload bits flipped, with VIRTIO_NET_HDR_F_DATA_VALID set',
    expected:
      'the guest trusts the device: it accepts the corrupted echo requests (InCsumErrors unchanged) and echoes the corrupted data back; the host sees "wrong data byte"',
    plan: {
      seed: 15,
      rules: [
        { name: 'flip', on: 'receiveq0', do: 'corrupt', after: 2 },
        { name: 'valid', on: 'receiveq0', do: 'header', field: 'flags', value: 2, after: 2 },
      ],
    },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(snmp Icmp InCsumErrors)"
phase serve
sleep 8
res after 0 "$(snmp Icmp InCsumErrors)"
res oops 0 "$(oops)"`,
    host: `ping -c 3 -W 2 ${GUEST_IP} 2>&1`,
    check: (r, hostOut) => {
      expect(r.get('clean')?.rc).toBe(0);
      expect(num(r, 'after')).toBe(num(r, 'clean'));
      expect(hostOut).toMatch(/wrong data byte/);
      const line = /wrong data byte[^\n]*/.exec(hostOut)?.[0] ?? '';
      return `accepted: host ping says "${line.trim()}"; Icmp InCsumErrors ${num(r, 'clean')} -> ${num(r, 'after')}`;
    },
  },
  {
    row: 16,
    // Every vring: this guest's virtqueues share one interrupt under TCG, so a transmitq
    // interrupt alone would have the driver poll the receiveq too.
    what: 'no interrupts (every vring) for a 2 s window while used entries pile up',
    expected: 'the ping RTT during the window is at least most of the window; no frame lost; traffic resumes',
    plan: { seed: 16, rules: [] },
    midPlan: (ms) => ({
      seed: 16,
      rules: [{ name: 'quiet', on: '*', do: 'notify-drop', atMs: Math.round(ms) + 1500, forMs: 2000 }],
    }),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
phase serve
ping -c 30 -i 0.2 -W 8 ${HOST_IP} > /tmp/p 2>&1; res ping $? "$(grep -o '[0-9]* packets received' /tmp/p | cut -d' ' -f1) $(grep -o 'time=[0-9.]*' /tmp/p | cut -d= -f2 | sort -n | tail -1)"
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $?
res oops 0 "$(oops)"`,
    check: (r) => {
      const [received, maxRtt] = (r.get('ping')?.text ?? '').split(' ').map(Number);
      expect(received, 'no frame lost').toBe(30);
      expect(maxRtt, 'the longest RTT spans most of the window').toBeGreaterThanOrEqual(1500);
      expect(r.get('after')?.rc, 'traffic resumes').toBe(0);
      return `30/30 replies; longest RTT ${maxRtt} ms (window 2000 ms); pings after answered`;
    },
  },
];

function kernelVersion(): string {
  try {
    return readFileSync(join(CACHE, 'guest', 'kernel-version'), 'utf8').trim();
  } catch {
    return 'Debian 12 cloud kernel (6.1)';
  }
}

describe('fault conditions on a Linux guest (C++ data path, TAP)', () => {
  it.each([...CONDITIONS].sort((a, b) => a.row - b.row))(
    'row $row: $what',
    async (c) => {
      const tmp = tempDir();
      cleanups.push(tmp.cleanup);
      const planFile = join(tmp.dir, 'plan.json');
      const logFile = join(tmp.dir, 'faults.jsonl');
      const control = process.env.VUN_FAULTS_CONTROL === '1';
      writeFileSync(planFile, JSON.stringify(control ? { seed: c.plan.seed, rules: [] } : c.plan));
      const { ns, sock, backend } = await hostEnd(cleanups, {
        args: ['--faults', planFile, '--fault-log', logFile, '--http', `127.0.0.1:${HTTP_PORT}`],
        iperf: c.iperf,
        quiet: true,
      });
      const g = bootGuest({
        socketPath: sock,
        script: HELPERS + c.script,
        ip: `${GUEST_IP}/24`,
        reconnect: c.reconnect,
        kernelLog: true,
        // A lockup is reported after 2 x watchdog_thresh seconds (default 10).
        append: c.finding ? ['watchdog_thresh=3'] : [],
      });
      cleanups.push(() => g.cleanup());
      let hostOut = '';
      let midPlan: FaultPlan | undefined;
      if (c.host || c.midPlan) await g.phase('serve');
      if (c.midPlan) {
        const { sessionMs } = JSON.parse(faultsRequest(ns, 'GET')) as { sessionMs: number };
        midPlan = c.midPlan(sessionMs);
        faultsRequest(ns, 'PUT', control ? { seed: midPlan.seed, rules: [] } : midPlan);
      }
      if (c.host) hostOut = ns.try(c.host).out;
      let r = new Map<string, { rc: number; text: string }>();
      if (c.finding) {
        const until = c.finding.until;
        await waitFor(() => until.test(g.qemu.output) || !g.qemu.running, 60_000, `${until} on the console`).catch(
          () => undefined,
        );
      } else r = await g.done(180_000);
      await backend.stop();
      const log = control ? [] : readFileSync(logFile, 'utf8').trim().split('\n').filter(Boolean);
      const ctx = `results ${JSON.stringify([...r])}\nfault log ${log.slice(0, 8).join('\n')}\nguest console:\n${g.qemu.tail(40)}\nbackend:\n${backend.tail(80)}`;
      if (control) {
        expect(
          () => c.check(r, hostOut, log, g.qemu.output),
          `without the plan the reaction check still passed\n${ctx}`,
        ).toThrow();
        return;
      }
      let observed = '';
      let pass = false;
      try {
        expect(log.length, `the plan injected nothing\n${ctx}`).toBeGreaterThan(0);
        if (!c.finding) expect(num(r, 'oops'), `the guest oopsed\n${ctx}`).toBe(0);
        else expect(g.qemu.output, 'no oops').not.toMatch(/Oops|kernel panic/);
        observed = c.check(r, hostOut, log, g.qemu.output);
        pass = true;
      } catch (err) {
        observed = `${(err as Error).message.split('\n')[0]}`;
        throw new Error(`${(err as Error).message}\n${ctx}`);
      } finally {
        mkdirSync(join(packageRoot, '.test-results'), { recursive: true });
        appendFileSync(
          join(packageRoot, '.test-results', 'fault-scorecard.jsonl'),
          `${JSON.stringify({ row: c.row, what: c.what, plan: midPlan ?? c.plan, expected: c.expected, observed, pass, finding: !!c.finding, faults: log.length, kernel: kernelVersion() })}\n`,
        );
      }
    },
    240_000,
  );
});
