/**
 * The oracles: what a guest's reaction was, as a set of signatures from a fixed vocabulary, read
 * from its console (the kernel log at loglevel 5 and above) and the counters the guest reports
 * before and after the plan (`VUN-RESULT vun-before` / `vun-after`) and after it is cleared
 * (`vun-alive`). docs/faults.md lists the vocabulary; a new word is a change of this file and
 * that table together.
 */

export const SIGNATURES = [
  'soft-lockup',
  'oops',
  'kernel-bug',
  'warning',
  'hung-task',
  'tx-timeout',
  'irq-nobody-cared',
  'bad-ring',
  'queue-failure',
  'length-error',
  'frame-error',
  'csum-error',
  'carrier-flap',
  'link-dead',
] as const;
export type Signature = (typeof SIGNATURES)[number];

/** Console lines that make a signature on their own (the first line seen is its evidence). */
const LINES: [Signature, RegExp][] = [
  ['soft-lockup', /soft lockup - CPU#\d+ stuck/],
  ['oops', /Oops:|general protection fault|unable to handle (kernel )?(NULL pointer|page fault|paging request)/],
  ['kernel-bug', /kernel BUG at|BUG: (?!soft lockup)(?!workqueue lockup)[A-Za-z]/],
  ['warning', /WARNING: CPU: \d+ PID: \d+/],
  ['hung-task', /blocked for more than \d+ seconds/],
  ['tx-timeout', /NETDEV WATCHDOG/],
  ['irq-nobody-cared', /irq \d+: nobody cared/],
  // BAD_RING (virtio_ring.c): dev_err "%s:" with the vq's name (input.N / output.N).
  ['bad-ring', /virtio\d+: (input|output)\.\d+:/],
  ['queue-failure', /queue failure/],
];

/** A hang: the runner stops waiting for the script once one shows (and its trace is out). */
export const HANG = /soft lockup - CPU#\d+ stuck|blocked for more than \d+ seconds|Kernel panic/;

/** The counters the guest reports (the script's prologue and epilogue print them). */
export const COUNTERS_SH = `counters() {
  n=/sys/class/net/eth0/statistics
  echo "len=$(cat $n/rx_length_errors) frame=$(cat $n/rx_frame_errors) csum=$(awk '/^(Ip|Icmp|Tcp|Udp):/ && !h[$1]++ {for(i=2;i<=NF;i++) if($i=="InCsumErrors") c[$1]=i; next} $1 in c {s+=$c[$1]} END{print s+0}' /proc/net/snmp) carrier=$(cat /sys/class/net/eth0/carrier_changes)"
}`;

export interface Counters {
  len: number;
  frame: number;
  csum: number;
  carrier: number;
}

export function parseCounters(text: string | undefined): Counters | undefined {
  if (!text) return undefined;
  const m = /len=(\d+) frame=(\d+) csum=(\d+) carrier=(\d+)/.exec(text);
  if (!m) return undefined;
  return { len: Number(m[1]), frame: Number(m[2]), csum: Number(m[3]), carrier: Number(m[4]) };
}

export interface Classified {
  signatures: Signature[];
  /** One line (or counter change) per signature: why it is there. */
  evidence: Partial<Record<Signature, string>>;
}

/**
 * Classifies a run: console lines, counter deltas (before -> after), and whether traffic came
 * back after the plan was cleared (`alive`: true, false, or undefined when the guest never got
 * that far: no word then).
 */
export function classify(console: string, before?: Counters, after?: Counters, alive?: boolean): Classified {
  const evidence: Partial<Record<Signature, string>> = {};
  const lines = console.split('\n').map((l) => l.replace(/\r$/, ''));
  for (const [sig, re] of LINES) {
    const line = lines.find((l) => re.test(l));
    if (line !== undefined) evidence[sig] = line.replace(/^.*?\]\s*/, '').trim();
  }
  if (before && after) {
    const delta = (k: keyof Counters) => after[k] - before[k];
    if (delta('len') > 0) evidence['length-error'] = `rx_length_errors +${delta('len')}`;
    if (delta('frame') > 0) evidence['frame-error'] = `rx_frame_errors +${delta('frame')}`;
    if (delta('csum') > 0) evidence['csum-error'] = `InCsumErrors +${delta('csum')}`;
    if (delta('carrier') >= 2) evidence['carrier-flap'] = `carrier_changes +${delta('carrier')}`;
  }
  if (alive === false) evidence['link-dead'] = 'no ping answered after the plan was cleared';
  const signatures = SIGNATURES.filter((s) => evidence[s] !== undefined);
  return { signatures, evidence };
}
