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

/** The signatures read from the kernel's own reports on the console (the rest read counters and traffic). */
export const KERNEL_REPORTS: readonly Signature[] = LINES.map(([s]) => s);

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

/** How many frames `stackFrames` keeps. */
export const TOP_FRAMES = 5;

/** Entry and interrupt plumbing: in every trace, so they tell two traces apart by nothing. */
const PLUMBING =
  /^(asm_|sysvec_|__sysvec_|irq_exit|__irq_exit|do_softirq|__do_softirq|handle_softirqs|__local_bh_enable|ret_from_fork|entry_SYSCALL|do_syscall_64|common_interrupt|__common_interrupt|cpu_startup_entry|do_idle|default_idle|start_kernel|secondary_startup|x86_64_start|arch_call_rest_init|rest_init|kthread$|smpboot_thread_fn|run_ksoftirqd|irq_thread)/;

/** The function of a frame line (`[  1.2]  name+0x1/0x2 [module]`), or undefined for a guessed one. */
function frameName(line: string): string | undefined {
  const body = line.replace(/^\[[^\]]*\]\s*/, '').trim();
  // A guessed frame ("? name+0x..") does not match: the name must start the line.
  const m = /^([A-Za-z_][\w.]*)\+0x[0-9a-f]+\/0x[0-9a-f]+/.exec(body);
  return m ? (m[1] as string) : undefined;
}

/**
 * The top frames of the first stack trace in `console`: the RIP's function, then the call
 * trace's, without plumbing or repeats, at most TOP_FRAMES.
 */
export function stackFrames(console: string, top = TOP_FRAMES): string[] {
  const lines = console.split('\n').map((l) => l.replace(/\r$/, ''));
  const first = lines.findIndex((l) => /Call Trace:|RIP: 0010:/.test(l));
  if (first < 0) return [];
  const frames: string[] = [];
  const add = (name: string | undefined) => {
    if (name && !PLUMBING.test(name) && !frames.includes(name)) frames.push(name);
  };
  for (let i = first; i < lines.length && frames.length < top; i++) {
    const l = lines[i] as string;
    const rip = /RIP: 0010:([A-Za-z_][\w.]*)\+0x/.exec(l);
    if (rip) {
      add(rip[1]);
      continue;
    }
    // The trace ends at its closing marker, at the end of the interrupt it was taken in (what
    // follows is the interrupted task's), or at the next report.
    if (
      i > first &&
      /<\/TASK>|<\/IRQ>|---\[ end trace|^\S*\s*(watchdog:|BUG:|WARNING:)/.test(l.replace(/^\[[^\]]*\]\s*/, ''))
    )
      break;
    if (/Call Trace:|<IRQ>|<TASK>|<NMI>/.test(l)) continue;
    add(frameName(l));
  }
  return frames;
}
