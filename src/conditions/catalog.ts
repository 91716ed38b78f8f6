/**
 * The fault conditions: what a faulty virtio-net device can do to a Linux guest, the guard the
 * driver has, the plan that does it, the guest's script (traffic and what it reads back), and
 * the reaction expected, per kernel series and ring layout where they differ. This is the
 * product's own list (docs/fault-conditions.md is generated from it); `vhost-user-net conditions`
 * runs it against any kernel.
 *
 * A script reports with `res NAME RC [TEXT]` and may wait for the host with `phase serve`. The
 * runner adds the prologue (counters before) and the epilogue (counters after; the plan cleared;
 * is the link alive). Each plan skips its first events (`after`), and each script measures a
 * clean step first, so a reaction is seen to start with the fault.
 */
import type { FaultPlan } from '../faults/plan.js';
import { GUEST_IP, HOST_IP } from '../guest/host-end.js';
import type { Signature } from './signatures.js';

export type Ring = 'split' | 'packed';
export type Results = Map<string, { rc: number; text: string }>;

/** A reaction a run is held to: the signatures it must show, and those it must not. */
export interface Outcome {
  /** Where this outcome holds: a kernel series ("6.1", "6.12") and/or a ring layout. */
  series?: string;
  ring?: Ring;
  /** `finding`: differs from the reference reaction (documented with `note`). */
  verdict: 'expected' | 'finding';
  signatures: Signature[];
  /** Must not show (besides the severe ones, which never may unless listed in `signatures`). */
  absent?: Signature[];
  /** The guest hangs: its script never ends, so only the signatures are held to. */
  hangs?: boolean;
  /** The kernel's stack trace, when there is one, has this function among its top frames (signatures.ts stackFrames). */
  frame?: string;
  /** At least one of these shows too (a reaction that races between two ends); none of them is forbidden. */
  anyOf?: Signature[];
  note?: string;
}

export interface Condition {
  row: number;
  /** What the device does. */
  title: string;
  /** The driver's guard against it (function; commit title where one exists). */
  guard: string;
  /** The reaction the reference list expects, in words. */
  reaction: string;
  plan: FaultPlan;
  script: string;
  /** An iperf3 server on the host end. */
  iperf?: boolean;
  /** Run on the host end once the guest reaches `phase serve`; its output goes to `check`. */
  host?: string;
  /** A plan PUT when the guest reaches `phase serve`, made from the session's age then. */
  midPlan?: (sessionMs: number) => FaultPlan;
  /** QEMU redials the backend (reconnect=1). */
  reconnect?: boolean;
  /** The ring layouts the default matrix runs it on. */
  rings: Ring[];
  /** The reaction on any kernel, unless an entry of `outcomes` matches first. */
  expect: Outcome;
  outcomes?: Outcome[];
  /** Holds the script's results to the reaction; returns what was observed. Throws Mismatch. */
  check?(r: Results, ctx: { host: string; faults: string[]; console: string }): string;
}

/** A check that does not hold: the message says what was seen and what was wanted. */
export class Mismatch extends Error {}

function must(ok: boolean, what: string): void {
  if (!ok) throw new Mismatch(what);
}
const num = (r: Results, k: string): number => Number(r.get(k)?.text ?? NaN);
const rc = (r: Results, k: string): number | undefined => r.get(k)?.rc;
const clean = (r: Results): void => must(rc(r, 'clean') === 0, 'the clean ping before the fault was not answered');

/** Shell helpers for every script: counters, /proc/net/snmp fields, kernel log counts. */
export const HELPERS = `
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
mount -t debugfs none /sys/kernel/debug 2>/dev/null
echo 'module virtio_net +p' > /sys/kernel/debug/dynamic_debug/control 2>/dev/null
st() { cat /sys/class/net/eth0/statistics/$1; }
snmp() { awk -v p="$1:" -v f="$2" '$1==p && !h {for(i=2;i<=NF;i++) n[i]=$i; h=1; next} $1==p && h {for(i=2;i<=NF;i++) if(n[i]==f) print $i}' /proc/net/snmp; }
klog() { dmesg | grep -c "$1"; }
`;

const SEVERE: Signature[] = ['oops', 'kernel-bug', 'soft-lockup', 'hung-task', 'warning'];

/** What a run must not show under `o`: the severe signatures it does not list, and its `absent`. */
export function forbidden(o: Outcome): Signature[] {
  const allowed = [...o.signatures, ...(o.anyOf ?? [])];
  return [...new Set([...SEVERE.filter((s) => !allowed.includes(s)), ...(o.absent ?? [])])];
}

/** The outcome a run on `release` (uname -r) with `ring` is held to. */
export function outcomeFor(c: Condition, release: string, ring: Ring): Outcome {
  const series = /^(\d+\.\d+)/.exec(release)?.[1];
  return (
    c.outcomes?.find(
      (o) => (o.series === undefined || o.series === series) && (o.ring === undefined || o.ring === ring),
    ) ?? c.expect
  );
}

const expected = (signatures: Signature[], absent: Signature[] = []): Outcome => ({
  verdict: 'expected',
  signatures,
  absent,
});

/**
 * Rows 2 and 4: a transmitq lie breaks the transmitq (BAD_RING). What follows depends on
 * virtqueue_enable_cb_delayed, which virtnet_poll_cleantx loops on (`do { free_old_xmit } while
 * (!virtqueue_enable_cb_delayed(sq->vq))`): in 6.1 it still reads the ring, where the lying
 * entry stays pending (used->idx ahead of last_used_idx by more than `bufs`; packed: the
 * descriptor still marked used) while a broken vq hands nothing out, so the loop never ends. 6.12
 * returns true for a broken vq (6.12.117, "virtio_ring: fix infinite loop in
 * virtnet_poll_cleantx when device is broken"), and the poll ends.
 */
const TRANSMITQ_LIE: Outcome[] = [
  {
    series: '6.1',
    verdict: 'finding',
    signatures: ['bad-ring', 'soft-lockup'],
    hangs: true,
    note: 'the guest locks up in virtnet_poll: virtnet_poll_cleantx spins, virtqueue_enable_cb_delayed keeps seeing the entry a broken vq will never hand out',
  },
  {
    series: '6.12',
    verdict: 'expected',
    signatures: ['bad-ring', 'queue-failure', 'link-dead'],
    note: 'virtqueue_enable_cb_delayed returns true on a broken vq (taken into 6.12.117: "virtio_ring: fix infinite loop in virtnet_poll_cleantx when device is broken"), so the poll ends; each later transmit fails in start_xmit ("Unexpected TXQ (0) queue failure: -5") and is dropped; the queue is never stopped, so no TX watchdog',
  },
];

/**
 * Rows 2, 4 and 23: one lie about a transmitq completion breaks the transmitq; the guest's
 * script sends a little and the BAD_RING line and what follows are the reaction
 * (TRANSMITQ_LIE: the 6.1 lockup, 6.12's queue failure).
 */
function transmitqLie(
  row: number,
  title: string,
  guard: string,
  reaction: string,
  rule: FaultPlan['rules'][number],
  o: { rings?: Ring[]; line?: string } = {},
): Condition {
  return {
    row,
    title,
    guard,
    reaction,
    rings: o.rings ?? ['split', 'packed'],
    plan: { seed: row, rules: [rule] },
    expect: expected(['bad-ring']),
    outcomes: TRANSMITQ_LIE,
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
ping -c 4 -W 1 ${HOST_IP} >/dev/null 2>&1
res faulted 0 "$(dmesg | grep -c '${o.line ?? 'output.0:id'}')"`,
    check: (r) => {
      clean(r);
      must(num(r, 'faulted') >= 1, `no "${o.line ?? 'output.0:id'}" line`);
      return `${o.line ?? 'the BAD_RING line'}; the guest finished its script`;
    },
  };
}

/**
 * Rows 12 and 20: the guest watches its carrier go down and up (for up to `seconds`), reports
 * `flap` ("11": both seen) and `changes` (carrier_changes), then pings until one is answered
 * (`resumed`).
 */
const flapThenPing = (seconds: number): string => `down=0; up=0
for i in $(seq ${seconds * 10}); do
  c=$(cat /sys/class/net/eth0/carrier 2>/dev/null || echo 0)
  if [ "$c" = 0 ]; then down=1; elif [ $down = 1 ]; then up=1; break; fi
  sleep 0.1
done
res flap 0 "$down$up"
res changes 0 "$(cat /sys/class/net/eth0/carrier_changes)"
ok=1; for i in $(seq 30); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 && { ok=0; break; }; done
res resumed $ok`;

/** Rows 6-9: one lie about a received frame in mergeable mode (the default offer). */
function mergeable(
  row: number,
  title: string,
  guard: string,
  reaction: string,
  rules: FaultPlan['rules'],
  counter: 'rx_length_errors' | 'rx_frame_errors',
  line: string,
): Condition {
  return {
    row,
    title,
    guard,
    reaction,
    rings: ['split'],
    plan: { seed: row, rules },
    expect: expected([counter === 'rx_length_errors' ? 'length-error' : 'frame-error'], ['link-dead', 'bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(st ${counter})"
for i in $(seq 8); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; done
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $? "$(st ${counter})"
res log 0 "$(klog '${line}')"`,
    check: (r) => {
      clean(r);
      must(num(r, 'clean') === 0, `${counter} was ${num(r, 'clean')} before the fault`);
      must(num(r, 'after') >= 1, `${counter} did not grow`);
      must(num(r, 'log') >= 1, `no "${line}" in the kernel log`);
      must(rc(r, 'after') === 0, 'the link did not keep working');
      return `${counter} 0 -> ${num(r, 'after')}; dmesg "${line}" x${num(r, 'log')}; pings after it answered`;
    },
  };
}

export const CONDITIONS: Condition[] = [
  {
    row: 1,
    title: 'completes a receiveq chain with a used id >= the queue size',
    guard: 'virtqueue_get_buf_ctx_split / _packed: BAD_RING "id %u out of range"',
    reaction: 'dmesg "input.0:id N out of range"; receive stops on that queue; no oops',
    rings: ['split', 'packed'],
    plan: {
      seed: 1,
      rules: [{ name: 'bad-id', on: 'receiveq0', do: 'used-id', value: 'out-of-range', after: 3, count: 1 }],
    },
    expect: expected(['bad-ring', 'link-dead']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(klog 'out of range')"
ping -c 4 -W 2 ${HOST_IP} >/dev/null 2>&1; res faulted $?
res log 0 "$(klog 'input.0:id 256 out of range')"`,
    check: (r) => {
      clean(r);
      must(num(r, 'clean') === 0, 'an "out of range" line before the fault');
      must(num(r, 'log') >= 1, 'no "input.0:id 256 out of range" in the kernel log');
      return `input.0:id 256 out of range x${num(r, 'log')}`;
    },
  },
  transmitqLie(
    2,
    'completes a transmitq chain with a used id >= the queue size',
    'the same BAD_RING guard, on output.0',
    'dmesg "output.0:id N out of range"; transmit stalls; later the TX watchdog',
    { name: 'bad-id', on: 'transmitq0', do: 'used-id', value: 'out-of-range', after: 4, count: 1 },
  ),
  {
    row: 3,
    title: "big-buffer mode: completes a receiveq id that is a chain's second descriptor, not a head",
    guard: 'BAD_RING "id %u is not a head!"',
    reaction: 'dmesg "input.0:id N is not a head!"; receive on that queue stops; no oops',
    rings: ['split', 'packed'],
    plan: {
      seed: 3,
      rules: [
        { name: 'big', on: 'session', do: 'receive-mode', value: 'big' },
        // Direct chains: an indirect one is one descriptor in the ring, with no second.
        { name: 'direct', on: 'session', do: 'offer-mask', value: ['INDIRECT_DESC'] },
        { name: 'second', on: 'receiveq0', do: 'used-id', value: 'not-a-head', after: 3, count: 1 },
      ],
    },
    expect: expected(['bad-ring', 'link-dead']),
    script: `
f=$(cat /sys/class/net/eth0/device/features); res mode 0 "$(echo $f | cut -c16)$(echo $f | cut -c8)"
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(klog 'is not a head')"
ping -c 4 -W 2 ${HOST_IP} >/dev/null 2>&1
ping -c 2 -W 2 ${HOST_IP} >/dev/null 2>&1; res broken $?
res log 0 "$(klog 'is not a head')"
res line 0 "$(dmesg | grep -m1 'is not a head' | sed 's/^\\[[^]]*\\] //')"`,
    check: (r) => {
      must(r.get('mode')?.text === '01', `features ${r.get('mode')?.text}: not big mode (no MRG_RXBUF, GUEST_TSO4)`);
      clean(r);
      must(num(r, 'clean') === 0, 'an "is not a head" line before the fault');
      must(num(r, 'log') >= 1, 'no "is not a head" line');
      must(rc(r, 'broken') !== 0, 'receive did not stop on the broken queue');
      return `${r.get('line')?.text.trim()} (x${num(r, 'log')}); pings after it unanswered`;
    },
  },
  transmitqLie(
    4,
    'completes the same transmitq head twice',
    'the second completion hits "is not a head!"',
    'dmesg "output.0:id N is not a head!"; queue broken; no oops',
    { name: 'twice', on: 'transmitq0', do: 'used-id', value: 'repeat', after: 4, count: 1 },
  ),
  {
    row: 5,
    title: 'small-buffer mode: a used len larger than 1518 + the header',
    guard: 'receive_small; "virtio-net: Add validation for used length" (2021)',
    reaction: 'rx_length_errors +1 per frame; frame dropped; link keeps working',
    rings: ['split'],
    plan: {
      seed: 5,
      rules: [
        { name: 'small', on: 'session', do: 'receive-mode', value: 'small' },
        { name: 'long', on: 'receiveq0', do: 'used-len', value: '+4096', after: 3, count: 2 },
      ],
    },
    expect: expected(['length-error'], ['link-dead', 'bad-ring']),
    script: `
f=$(cat /sys/class/net/eth0/device/features); res mode 0 "$(echo $f | cut -c16)$(echo $f | cut -c8)$(echo $f | cut -c9)$(echo $f | cut -c10)"
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(st rx_length_errors)"
for i in $(seq 6); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; done
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $? "$(st rx_length_errors)"
res log 0 "$(klog 'exceeds max size')"`,
    check: (r) => {
      must(r.get('mode')?.text === '0000', `features ${r.get('mode')?.text}: not small mode`);
      clean(r);
      must(num(r, 'clean') === 0, 'rx_length_errors before the fault');
      must(num(r, 'after') === 2, `rx_length_errors ${num(r, 'after')}, wanted 2 (two long frames)`);
      must(rc(r, 'after') === 0, 'the link did not keep working');
      return `rx_length_errors 0 -> ${num(r, 'after')} (2 long frames); dmesg "exceeds max size" x${num(r, 'log')}; pings after answered`;
    },
  },
  mergeable(
    6,
    'mergeable mode: a used len larger than the buffer the driver posted',
    'receive_mergeable: "rx error: len %u exceeds truesize" (2021)',
    'rx_length_errors +1; frame dropped; link keeps working',
    [{ name: 'long', on: 'receiveq0', do: 'used-len', value: '+4096', after: 4, count: 1 }],
    'rx_length_errors',
    'exceeds truesize',
  ),
  mergeable(
    7,
    'mergeable mode: num_buffers larger than the buffers completed',
    'receive_mergeable: "rx error: %d buffers out of %d missing"',
    'rx_length_errors +1; frame dropped',
    [{ name: 'missing', on: 'receiveq0', do: 'header', field: 'num_buffers', value: 60000, after: 4, count: 1 }],
    'rx_length_errors',
    'buffers out of',
  ),
  mergeable(
    8,
    'a used len shorter than a header and an Ethernet header (a runt)',
    'receive_buf: "short packet" (pr_debug)',
    'rx_length_errors +1; frame dropped',
    [{ name: 'runt', on: 'receiveq0', do: 'runt', after: 4, count: 1 }],
    'rx_length_errors',
    'short packet',
  ),
  mergeable(
    9,
    'a receive header with NEEDS_CSUM and csum_start past the frame',
    'virtio_net_hdr_to_skb; "net: drop bad gso csum_start and offset in virtio_net_hdr" (2024)',
    'rx_frame_errors +1 ("bad gso", once); frame dropped',
    [
      { name: 'csum', on: 'receiveq0', do: 'header', field: 'flags', value: 1, after: 4, count: 1 },
      { name: 'csum-start', on: 'receiveq0', do: 'header', field: 'csum_start', value: 4000, after: 4, count: 1 },
    ],
    'rx_frame_errors',
    'bad gso',
  ),
  {
    row: 10,
    title: 'rewrites descriptors the driver posted (addr, len) in guest memory before completing them',
    guard:
      '"virtio-ring: store DMA metadata in desc_extra for split virtqueue" (2021): the driver unmaps from its own copy',
    reaction: 'no oops; traffic continues',
    rings: ['split', 'packed'],
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
    expect: expected([], ['link-dead', 'bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
for i in $(seq 20); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; done
ping -c 5 -W 2 ${HOST_IP} > /tmp/p 2>&1; res after $? "$(grep -o '[0-9]* packets received' /tmp/p)"`,
    check: (r, { faults }) => {
      const rewrites = faults.filter((l) => l.includes('"desc-rewrite"')).length;
      must(rewrites >= 20, `${rewrites} descriptors rewritten, wanted 20`);
      must(rc(r, 'after') === 0, 'traffic did not continue');
      return `${rewrites} descriptors rewritten (addr, len); ping after: ${r.get('after')?.text}`;
    },
  },
  {
    row: 11,
    title: 'never completes transmit chains (withholds used entries on a transmitq)',
    guard: 'dev_watchdog + virtnet_tx_timeout',
    reaction:
      'dmesg "NETDEV WATCHDOG: eth0 ... transmit queue 0 timed out"; tx_timeouts grows; the withheld chains never come back, so transmit stays dead after the plan is cleared',
    rings: ['split', 'packed'],
    plan: { seed: 1, rules: [{ name: 'keep', on: 'transmitq0', do: 'withhold', after: 4 }] },
    expect: expected(['tx-timeout', 'link-dead']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(klog 'NETDEV WATCHDOG')"
# One socket stalls on its send buffer once completions stop; many fill the ring.
for i in $(seq 300); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 & done
# The watchdog looks every 5 s (virtio_net's TX_TIMEOUT); wait for it, at most 20 s.
for i in $(seq 40); do [ "$(klog 'NETDEV WATCHDOG')" -gt 0 ] && break; sleep 0.5; done
res log 0 "$(klog 'NETDEV WATCHDOG')"
res timeouts 0 "$(ethtool -S eth0 2>/dev/null | grep -i timeout | tr -s ' ' | tr '\\n' ' ')"`,
    check: (r) => {
      clean(r);
      must(num(r, 'clean') === 0, 'a watchdog line before the fault');
      must(num(r, 'log') >= 1, 'no NETDEV WATCHDOG line');
      return `NETDEV WATCHDOG x${num(r, 'log')}; ethtool -S: ${r.get('timeouts')?.text.trim() || '(no timeout counter)'}`;
    },
  },
  {
    row: 12,
    title: 'closes the vhost-user connection (a link flap), then serves the reconnect',
    guard: 'QEMU sets the link down on close (net/vhost-user.c); the driver sees the config change',
    reaction: 'carrier goes 0 then 1; carrier_changes grows; traffic resumes',
    rings: ['split'],
    plan: { seed: 12, rules: [] },
    reconnect: true,
    midPlan: (ms) => ({
      seed: 12,
      rules: [{ name: 'flap', on: 'session', do: 'disconnect', atMs: Math.round(ms) + 1000, count: 1 }],
    }),
    expect: expected(['carrier-flap'], ['link-dead']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(cat /sys/class/net/eth0/carrier_changes)"
phase serve
${flapThenPing(20)}`,
    check: (r) => {
      clean(r);
      must(r.get('flap')?.text === '11', `carrier seen ${r.get('flap')?.text}, wanted 0 then 1`);
      must(num(r, 'changes') - num(r, 'clean') >= 2, 'carrier_changes did not grow by 2');
      must(rc(r, 'resumed') === 0, 'traffic did not resume');
      return `carrier 1 -> 0 -> 1; carrier_changes ${num(r, 'clean')} -> ${num(r, 'changes')}; ping after the reconnect answered`;
    },
  },
  {
    row: 13,
    title: 'drops a fraction of frames, both directions',
    guard: 'TCP retransmission',
    reaction: 'iperf3 completes; Tcp RetransSegs grows',
    rings: ['split'],
    iperf: true,
    plan: { seed: 13, rules: [{ name: 'lose', on: '*', do: 'drop', probability: 0.05, after: 4 }] },
    expect: expected([], ['link-dead', 'bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(snmp Tcp RetransSegs)"
iperf3 -c ${HOST_IP} -t 4 > /tmp/i 2>&1; res iperf $? "$(grep receiver /tmp/i | tail -1)"
res after 0 "$(snmp Tcp RetransSegs)"`,
    check: (r) => {
      must(rc(r, 'iperf') === 0, `iperf3 failed: ${r.get('iperf')?.text}`);
      must(
        num(r, 'after') > num(r, 'clean'),
        `RetransSegs ${num(r, 'clean')} -> ${num(r, 'after')}: no retransmission`,
      );
      return `iperf3 completed (${r.get('iperf')?.text.replace(/\s+/g, ' ').trim()}); RetransSegs ${num(r, 'clean')} -> ${num(r, 'after')}`;
    },
  },
  {
    row: 14,
    title: 'flips bits in a frame (header intact, no DATA_VALID)',
    guard: "the guest's IP/TCP/UDP/ICMP checksum",
    reaction: 'InCsumErrors grows; no corrupted byte reaches the application',
    rings: ['split'],
    plan: { seed: 14, rules: [{ name: 'flip', on: 'receiveq0', do: 'corrupt', after: 2 }] },
    expect: expected(['csum-error'], ['bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(snmp Icmp InCsumErrors)"
ping -c 4 -W 1 ${HOST_IP} > /tmp/p 2>&1; res faulted $? "$(grep -o '[0-9]* packets received' /tmp/p)"
res after 0 "$(snmp Icmp InCsumErrors)"`,
    check: (r) => {
      clean(r);
      must(num(r, 'after') - num(r, 'clean') >= 3, `Icmp InCsumErrors ${num(r, 'clean')} -> ${num(r, 'after')}`);
      return `Icmp InCsumErrors ${num(r, 'clean')} -> ${num(r, 'after')}; ping: ${r.get('faulted')?.text}`;
    },
  },
  {
    row: 15,
    title: 'the same corruption, with VIRTIO_NET_HDR_F_DATA_VALID set',
    guard: 'none: the driver trusts the device (CHECKSUM_UNNECESSARY)',
    reaction:
      'the guest accepts the corrupted echo requests and echoes the corrupted data; the host sees "wrong data byte"',
    rings: ['split'],
    plan: {
      seed: 15,
      rules: [
        { name: 'flip', on: 'receiveq0', do: 'corrupt', after: 2 },
        { name: 'valid', on: 'receiveq0', do: 'header', field: 'flags', value: 2, after: 2 },
      ],
    },
    expect: expected([], ['csum-error', 'bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(snmp Icmp InCsumErrors)"
phase serve
sleep 8
res after 0 "$(snmp Icmp InCsumErrors)"`,
    host: `ping -c 3 -W 2 ${GUEST_IP} 2>&1`,
    check: (r, { host }) => {
      clean(r);
      must(num(r, 'after') === num(r, 'clean'), 'Icmp InCsumErrors grew: the guest checked');
      must(/wrong data byte/.test(host), 'the host saw no "wrong data byte"');
      const line = /wrong data byte[^\n]*/.exec(host)?.[0] ?? '';
      return `accepted: host ping says "${line.trim()}"; Icmp InCsumErrors ${num(r, 'clean')} -> ${num(r, 'after')}`;
    },
  },
  {
    row: 16,
    // Every vring: under TCG (INTx) the virtqueues share one interrupt, so a transmitq
    // interrupt alone would have the driver poll the receiveq too.
    title: 'suppresses interrupts (every vring) for a 2 s window while used entries pile up',
    guard: 'NAPI runs only when interrupted or polled',
    reaction: 'ping RTT during the window is at least most of the window; no frame lost; traffic resumes',
    rings: ['split'],
    plan: { seed: 16, rules: [] },
    midPlan: (ms) => ({
      seed: 16,
      rules: [{ name: 'quiet', on: '*', do: 'notify-drop', atMs: Math.round(ms) + 1500, forMs: 2000 }],
    }),
    expect: expected([], ['link-dead', 'bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
phase serve
ping -c 30 -i 0.2 -W 8 ${HOST_IP} > /tmp/p 2>&1; res ping $? "$(grep -o '[0-9]* packets received' /tmp/p | cut -d' ' -f1) $(grep -o 'time=[0-9.]*' /tmp/p | cut -d= -f2 | sort -n | tail -1)"
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $?`,
    check: (r) => {
      const [received, maxRtt] = (r.get('ping')?.text ?? '').split(' ').map(Number);
      must(received === 30, `${received}/30 replies: frames lost`);
      must((maxRtt ?? 0) >= 1500, `longest RTT ${maxRtt} ms: the window (2000 ms) was not felt`);
      must(rc(r, 'after') === 0, 'traffic did not resume');
      return `30/30 replies; longest RTT ${maxRtt} ms (window 2000 ms); pings after answered`;
    },
  },
  {
    row: 17,
    title: 'big-buffer mode: a used len beyond the pages the driver posted',
    guard: 'receive_big: "rx error: len %u exceeds allocated size %lu" (pr_debug), counted as a drop',
    reaction: 'rx_dropped +1 per frame (not rx_length_errors); frame dropped; link keeps working',
    rings: ['split'],
    plan: {
      seed: 17,
      rules: [
        { name: 'big', on: 'session', do: 'receive-mode', value: 'big' },
        { name: 'huge', on: 'receiveq0', do: 'used-len', value: '=200000', after: 3, count: 2 },
      ],
    },
    expect: expected([], ['link-dead', 'bad-ring', 'length-error']),
    script: `
f=$(cat /sys/class/net/eth0/device/features); res mode 0 "$(echo $f | cut -c16)$(echo $f | cut -c8)"
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(st rx_dropped)"
for i in $(seq 6); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; done
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $? "$(st rx_dropped)"
res log 0 "$(klog 'exceeds allocated size')"`,
    check: (r) => {
      must(r.get('mode')?.text === '01', `features ${r.get('mode')?.text}: not big mode (no MRG_RXBUF, GUEST_TSO4)`);
      clean(r);
      const dropped = num(r, 'after') - num(r, 'clean');
      must(dropped === 2, `rx_dropped +${dropped}, wanted +2 (two frames with a len of 200000)`);
      must(num(r, 'log') >= 1, 'no "exceeds allocated size" in the kernel log');
      must(rc(r, 'after') === 0, 'the link did not keep working');
      return `rx_dropped +${dropped}; dmesg "exceeds allocated size" x${num(r, 'log')}; pings after answered`;
    },
  },
  {
    row: 18,
    title: 'batches completions: used entries published 32 at a time, or after 200 ms (every vring)',
    guard: 'none needed: a device may complete late; NAPI takes what is published when interrupted',
    reaction: 'traffic continues; low-rate RTT grows by up to the hold (200 ms); nothing lost',
    rings: ['split'],
    plan: { seed: 18, rules: [{ name: 'batch', on: '*', do: 'used-burst', value: 32, holdMs: 200, after: 2 }] },
    expect: expected([], ['link-dead', 'bad-ring', 'tx-timeout']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
ping -c 10 -i 0.3 -W 3 ${HOST_IP} > /tmp/p 2>&1; res ping $? "$(grep -o '[0-9]* packets received' /tmp/p | cut -d' ' -f1) $(grep -o 'time=[0-9.]*' /tmp/p | cut -d= -f2 | sort -n | tail -1)"`,
    check: (r) => {
      clean(r);
      const [received, maxRtt] = (r.get('ping')?.text ?? '').split(' ').map(Number);
      must(received === 10, `${received}/10 replies: frames lost`);
      must((maxRtt ?? 0) >= 150, `longest RTT ${maxRtt} ms: the 200 ms hold was not felt`);
      return `10/10 replies; longest RTT ${maxRtt} ms (hold 200 ms)`;
    },
  },
  {
    row: 19,
    title: 'batches completions without a bound: used entries published only 32 at a time (every vring)',
    guard: 'none: the driver waits for completions that a low-rate flow never brings',
    reaction:
      'low-rate traffic stalls while the plan holds (pings unanswered); no TX watchdog (the queue is not stopped)',
    rings: ['split'],
    plan: { seed: 19, rules: [{ name: 'batch', on: '*', do: 'used-burst', value: 32, after: 2 }] },
    expect: expected([], ['bad-ring', 'tx-timeout']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
ping -c 5 -i 0.3 -W 2 ${HOST_IP} > /tmp/p 2>&1; res stalled $? "$(grep -o '[0-9]* packets received' /tmp/p | cut -d' ' -f1)"`,
    check: (r) => {
      clean(r);
      const received = num(r, 'stalled');
      must(received <= 1, `${received}/5 replies: traffic did not stall`);
      return `${received}/5 replies while the batch waited for 32 entries`;
    },
  },
  {
    row: 20,
    title:
      "offers fewer features after a reconnect: the second session's GET_FEATURES lacks MRG_RXBUF, which the guest acked",
    guard:
      'QEMU\'s vhost_net_init: the acked features must all be offered ("vhost lacks feature mask ... for backend")',
    reaction:
      'QEMU refuses the shrunken backend and closes; the guest link stays down until a session offers the features again, then resumes',
    rings: ['split'],
    plan: { seed: 20, rules: [] },
    reconnect: true,
    midPlan: (ms) => ({
      seed: 20,
      rules: [
        { name: 'flap', on: 'session', do: 'disconnect', atMs: Math.round(ms) + 1000, count: 1 },
        { name: 'shrink', on: 'session', do: 'offer-mask', value: ['MRG_RXBUF'], session: 2 },
      ],
    }),
    expect: expected(['carrier-flap'], ['link-dead']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
phase serve
${flapThenPing(30)}`,
    check: (r, { faults, console }) => {
      clean(r);
      must(
        faults.some((l) => l.includes('"shrink"')),
        'the second session was not offered less',
      );
      const refused = /vhost lacks feature mask (0x[0-9a-f]+) for backend/.exec(console);
      must(refused !== null, 'QEMU did not refuse the shrunken offer ("vhost lacks feature mask")');
      must(r.get('flap')?.text === '11', `carrier seen ${r.get('flap')?.text}, wanted 0 then 1`);
      must(rc(r, 'resumed') === 0, 'traffic did not resume once the features came back');
      return `QEMU: "vhost lacks feature mask ${refused?.[1]} for backend" (MRG_RXBUF), the shrunken session closed; carrier 1 -> 0 -> 1 with the next session; ping answered`;
    },
  },
  {
    row: 21,
    title:
      "packed rings: a receiveq used descriptor flagged for the other wrap counter (AVAIL and USED not the device's)",
    guard:
      'none: virtqueue_get_buf_ctx_packed reads a descriptor as used only when AVAIL == USED == its used wrap counter (§2.8.1); anything else looks not yet used',
    reaction: 'no log line, no counter: receive stops at that descriptor for good (every later one is behind it)',
    rings: ['packed'],
    plan: { seed: 21, rules: [{ name: 'wrap', on: 'receiveq0', do: 'used-wrap', after: 3, count: 1 }] },
    expect: expected(['link-dead'], ['bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
ping -c 4 -W 1 ${HOST_IP} >/dev/null 2>&1
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res stalled $?`,
    check: (r) => {
      clean(r);
      must(rc(r, 'stalled') !== 0, 'receive did not stop');
      return 'pings unanswered after the lie, with nothing in the kernel log';
    },
  },
  {
    row: 22,
    title: 'packed rings: transmitq used descriptors flagged for the other wrap counter, under a flood',
    guard: 'none at the ring (the completion is never seen); dev_watchdog once the ring is full and the queue stopped',
    reaction: 'completions stop at the lie; the ring fills; NETDEV WATCHDOG; transmit dead',
    rings: ['packed'],
    plan: { seed: 22, rules: [{ name: 'wrap', on: 'transmitq0', do: 'used-wrap', after: 4, count: 1 }] },
    expect: expected(['tx-timeout', 'link-dead'], ['bad-ring']),
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(klog 'NETDEV WATCHDOG')"
for i in $(seq 300); do ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1 & done
for i in $(seq 40); do [ "$(klog 'NETDEV WATCHDOG')" -gt 0 ] && break; sleep 0.5; done
res log 0 "$(klog 'NETDEV WATCHDOG')"`,
    check: (r) => {
      clean(r);
      must(num(r, 'clean') === 0, 'a watchdog line before the fault');
      must(num(r, 'log') >= 1, 'no NETDEV WATCHDOG line');
      return `NETDEV WATCHDOG x${num(r, 'log')} after one completion was flagged for the other wrap counter`;
    },
  },
  transmitqLie(
    23,
    'packed rings: completes a transmitq buffer id the driver never made available (id 200)',
    'virtqueue_get_buf_ctx_packed: BAD_RING "id %u is not a head!" (desc_state[id].data is NULL)',
    'dmesg "output.0:id 200 is not a head!"; the transmitq is broken; what follows is rows 2 and 4\'s',
    { name: 'stranger', on: 'transmitq0', do: 'used-id', value: 200, after: 4, count: 1 },
    { rings: ['packed'], line: 'id 200 is not a head' },
  ),
  {
    row: 24,
    title:
      'an interrupt storm the guest sees: 60,000 interrupts, one every 20 us, with nothing new in the rings (INTx)',
    guard:
      'vp_interrupt (virtio_pci_common.c) claims every interrupt whose ISR bit is set, and QEMU sets it with each notification: the spurious-IRQ detector never counts one',
    reaction:
      'the guest takes them as interrupts (at least 10,000 in 8 s here; unpaced, the writes merge in the eventfd); no "irq N: nobody cared", no "Disabling IRQ"; traffic continues',
    rings: ['split'],
    plan: {
      seed: 24,
      rules: [{ name: 'storm', on: 'receiveq0', do: 'notify-storm', value: 60000, paceUs: 20, after: 2, count: 1 }],
    },
    expect: expected([], ['irq-nobody-cared', 'link-dead', 'bad-ring']),
    script: `
irqs() { awk '/virtio0/ {s=0; for(i=2;i<=NF;i++) if($i ~ /^[0-9]+$/) s+=$i; print s; exit}' /proc/interrupts; }
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(irqs)"
ping -c 2 -W 2 ${HOST_IP} >/dev/null 2>&1
sleep 8
res storm 0 "$(irqs)"
res cared 0 "$(klog 'nobody cared')"
ping -c 3 -W 2 ${HOST_IP} >/dev/null 2>&1; res after $?`,
    check: (r) => {
      clean(r);
      const taken = num(r, 'storm') - num(r, 'clean');
      must(taken >= 10000, `${taken} interrupts taken: the storm did not reach the guest as interrupts`);
      must(num(r, 'cared') === 0, '"nobody cared" in the kernel log');
      must(rc(r, 'after') === 0, 'traffic did not continue');
      return `${taken} interrupts taken on the virtio line (INTx) in 8 s, each claimed by vp_interrupt (ISR set); no "nobody cared"; pings after answered`;
    },
  },
  {
    row: 25,
    title:
      'a receive header whose csum_start points before the transport header (partially checksummed frames from the host)',
    guard:
      'virtio_net_hdr_to_skb: a NEEDS_CSUM header whose csum_start puts the transport header before the network header is refused (-EINVAL)',
    reaction:
      'rx_frame_errors grows: the TCP frames from the host are dropped at the header; nothing is delivered wrong; traffic flows once the header is right',
    rings: ['split'],
    // Found by the explorer (docs/explorer.md): csum_start 0 on every receiveq frame.
    plan: {
      seed: 25,
      rules: [{ name: 'early-csum', on: 'receiveq0', do: 'header', field: 'csum_start', value: 0, after: 2 }],
    },
    iperf: true,
    expect: expected(['frame-error'], ['bad-ring', 'csum-error', 'link-dead']),
    outcomes: [
      {
        series: '6.1',
        verdict: 'finding',
        signatures: ['csum-error'],
        absent: ['bad-ring', 'frame-error', 'link-dead'],
        note: "6.1's virtio_net_hdr_to_skb has no transport-offset check: the frame goes up as CHECKSUM_PARTIAL with csum_start before the data, which skb_csum_unnecessary does not trust, so TCP verifies the checksum itself, finds only the pseudo-header sum the host left, and drops it (Tcp InCsumErrors)",
      },
    ],
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $? "$(snmp Tcp InCsumErrors) $(st rx_frame_errors)"
timeout 12 iperf3 -c ${HOST_IP} -t 2 -R --connect-timeout 3000 >/dev/null 2>&1; res iperf $?
res after 0 "$(snmp Tcp InCsumErrors) $(st rx_frame_errors)"`,
    check: (r) => {
      clean(r);
      const [c0, f0] = (r.get('clean')?.text ?? '').split(' ').map(Number);
      const [c1, f1] = (r.get('after')?.text ?? '').split(' ').map(Number);
      must(
        (c1 ?? 0) > (c0 ?? 0) || (f1 ?? 0) > (f0 ?? 0),
        `neither Tcp InCsumErrors (${c0} -> ${c1}) nor rx_frame_errors (${f0} -> ${f1}) grew`,
      );
      return `Tcp InCsumErrors ${c0} -> ${c1}, rx_frame_errors ${f0} -> ${f1}; iperf3 -R exit ${rc(r, 'iperf')}`;
    },
  },
  {
    row: 26,
    title:
      'completes a transmitq chain with a used id >= the queue size while nothing comes back (the guest sends to a neighbour that does not answer)',
    guard: "BAD_RING on output.0, then start_xmit's own loop: free_old_xmit_skbs until virtqueue_enable_cb_delayed",
    reaction: 'dmesg "output.0:id N out of range"; later transmits fail ("queue failure") and are dropped',
    rings: ['split'],
    // Found by the explorer: row 2's lie, caught in start_xmit instead of virtnet_poll. With no
    // frame for the guest, no receive poll runs, so the transmit path meets the broken queue first.
    plan: {
      seed: 26,
      rules: [{ name: 'bad-id', on: 'transmitq0', do: 'used-id', value: 'out-of-range', after: 4, count: 1 }],
    },
    expect: expected(['bad-ring']),
    outcomes: [
      {
        series: '6.1',
        verdict: 'finding',
        signatures: ['bad-ring', 'soft-lockup'],
        hangs: true,
        frame: 'start_xmit',
        note: "the guest locks up in start_xmit: its do-while calls free_old_xmit_skbs again while virtqueue_enable_cb_delayed says used entries wait, which a broken vq never hands out (row 2's spin, from the transmit side; the same 6.12.117 fix ends both)",
      },
      {
        series: '6.12',
        verdict: 'expected',
        signatures: ['bad-ring', 'queue-failure', 'link-dead'],
        note: 'virtqueue_enable_cb_delayed returns true on a broken vq, so start_xmit goes on to xmit_skb, which fails (-EIO) and drops the frame',
      },
    ],
    script: `
ip neigh replace 10.77.0.9 lladdr 02:00:00:00:00:09 dev eth0
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
for i in $(seq 8); do ping -c 1 -W 1 10.77.0.9 >/dev/null 2>&1; done
res faulted 0 "$(dmesg | grep -c 'output.0:id')"`,
    check: (r) => {
      clean(r);
      must(num(r, 'faulted') >= 1, 'no "output.0:id" line');
      return 'the BAD_RING line; the guest finished its script';
    },
  },
  {
    row: 27,
    title: 'sets VRING_DESC_F_NEXT in the head descriptor of each receive buffer it completes (split rings)',
    guard:
      'none: detach_buf_split walks the chain by the flags in the shared descriptor table (vring.desc[i].flags & NEXT) and the next index in its own desc_extra, so the walk runs on through the free list as long as stale flags say NEXT',
    reaction: 'the chain walk never ends: soft lockup in detach_buf_split, from the receive poll',
    rings: ['split'],
    // Found by the explorer on 6.1 and 6.12 (docs/explorer.md): desc-rewrite of flags on every vring.
    plan: {
      seed: 27,
      rules: [{ name: 'next', on: 'receiveq0', do: 'desc-rewrite', field: 'flags', value: 1, after: 2 }],
    },
    iperf: true,
    // The walk cycles (a lockup) or ends having freed posted buffers (BAD_RING later): a race on
    // both kernels (6.1: 3 runs of 5 here ended in BAD_RING; 6.12: 1 of 4).
    expect: {
      verdict: 'finding',
      signatures: [],
      anyOf: ['soft-lockup', 'bad-ring'],
      hangs: true,
      frame: 'detach_buf_split',
      note: 'a device that sets NEXT in descriptors it completes sends detach_buf_split round the free list (the driver trusts the shared flags, not its own desc_extra copy): when stale flags close a cycle the CPU never leaves the receive poll (soft lockup); when the walk ends it has counted posted buffers as free, which are handed out again: BAD_RING ("input.0:id N is not a head!"), length errors, a dead receiveq',
    },
    script: `
ping -c 1 -W 3 ${HOST_IP} >/dev/null 2>&1; res clean $?
timeout 10 iperf3 -c ${HOST_IP} -t 3 -R --connect-timeout 3000 >/dev/null 2>&1
ping -c 20 -i 0.1 -W 1 ${HOST_IP} >/dev/null 2>&1
res survived 0`,
    check: (r) => {
      clean(r);
      return 'the guest finished its script';
    },
  },
];

export function conditionByRow(row: number): Condition | undefined {
  return CONDITIONS.find((c) => c.row === row);
}
