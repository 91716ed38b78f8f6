/**
 * Every command-line flag, declared once: its name, the kind of value it takes, the config
 * path it sets (flags and the config file share one schema, src/config/config.ts), and its
 * help. The parser options, the merge of flags over the config file and the usage text are all
 * built from this table.
 */
import { ConfigError, ErrorCode } from '../errors.js';

export interface Flag {
  name: string;
  /** Other spellings (the vhost-user backend program conventions name some). */
  aliases?: readonly string[];
  short?: string;
  /** string: as given; int: a whole number; list: whole numbers separated by commas. */
  kind: 'boolean' | 'string' | 'int' | 'list';
  /** The value's name in the usage text. */
  value?: string;
  /** Dotted config path the flag sets; absent for flags that are not configuration. */
  config?: string;
  /** Another flag this one needs (its config path must be set after the merge). */
  needs?: string;
  /** Usage text; a long one is continued on the lines after it. */
  help: string | readonly string[];
}

export const FLAGS: readonly Flag[] = [
  {
    name: 'socket',
    aliases: ['socket-path'],
    kind: 'string',
    value: 'PATH',
    config: 'socket.path',
    help: 'vhost-user socket (server mode: created; client mode: dialled)',
  },
  {
    name: 'fd',
    kind: 'int',
    value: 'N',
    config: 'socket.fd',
    help: 'serve on an inherited unix socket (instead of --socket-path): a listening one is accepted on, a connected one is served as the session',
  },
  {
    name: 'client',
    kind: 'boolean',
    config: 'socket.client',
    help: 'dial the socket (QEMU runs it with server=on) and redial after loss',
  },
  {
    name: 'socket-mode',
    kind: 'string',
    value: 'MODE',
    config: 'socket.mode',
    help: 'octal file mode of the created socket (default 0600)',
  },
  {
    name: 'socket-owner',
    kind: 'string',
    value: 'USER',
    config: 'socket.owner',
    help: 'owner of the created socket (a name or a uid)',
  },
  {
    name: 'socket-group',
    kind: 'string',
    value: 'GROUP',
    config: 'socket.group',
    help: "group of the created socket (a name or a gid): with --socket-mode 0660, QEMU's group can connect",
  },
  {
    name: 'user',
    kind: 'string',
    value: 'USER[:GROUP]',
    config: 'user',
    help: 'drop to this user (and group) once the socket and the host devices are open (docs/privileges.md)',
  },
  {
    name: 'mtu',
    kind: 'int',
    value: 'N',
    config: 'mtu',
    help: "the TAP's MTU on the host side, kept (default: the front-end's NET_SET_MTU is applied to a TAP)",
  },
  {
    name: 'queues',
    kind: 'int',
    value: 'N',
    config: 'queues',
    help: 'queue pairs offered (GET_QUEUE_NUM), 1..64 (default 1)',
  },
  {
    name: 'backend',
    kind: 'string',
    value: 'SPEC',
    config: 'backend',
    help: 'tap:NAME[,persist][,io-uring=on|off|auto] | macvtap:PARENT,mac=MAC[,mode=bridge|vepa|private|passthru][,name=NAME][,io-uring=on|off|auto] | af-packet:IFACE[,qdisc-bypass][,rx-ring][,fanout=hash|lb|cpu|rnd|qm] | loopback | null[:source=LEN] (default null)',
  },
  {
    name: 'datapath',
    kind: 'string',
    value: 'KIND',
    config: 'datapath',
    help: 'native (C++ workers, default) | ts (the TS reference: slow, for learning)',
  },
  {
    name: 'ring',
    kind: 'string',
    value: 'LAYOUT',
    config: 'ring',
    help: 'auto (default: packed offered, the driver chooses) | split | packed (required)',
  },
  {
    name: 'ring-state',
    kind: 'string',
    value: 'FILE|off',
    config: 'ringState',
    help: [
      'where packed rings keep their positions, so a restarted backend resumes them',
      '(default: SOCKET.rings beside the socket, skipped with a warning if it cannot be made)',
    ],
  },
  {
    name: 'steering',
    kind: 'string',
    value: 'POLICY',
    config: 'steering.policy',
    help: 'toeplitz (default) | flow-affinity | none: which receiveq a host frame takes',
  },
  {
    name: 'rss-key',
    kind: 'string',
    value: 'HEX',
    config: 'steering.key',
    help: '40-byte Toeplitz key as 80 hex digits (default: the standard key)',
  },
  {
    name: 'threads',
    kind: 'int',
    value: 'N',
    config: 'threads',
    help: 'worker threads, queue pairs spread round robin (default: one per pair)',
  },
  {
    name: 'poll-us',
    kind: 'int',
    value: 'N',
    config: 'pollUs',
    help: 'busy-poll N microseconds after the last frame before sleeping (default 0)',
  },
  {
    name: 'coalesce',
    kind: 'string',
    value: 'MODE',
    config: 'coalesce.mode',
    help: [
      'interrupt coalescing: adaptive (default: at once when idle, at most one',
      'per --coalesce-usecs when busy) | static (each held up to usecs) | off',
    ],
  },
  {
    name: 'coalesce-usecs',
    kind: 'int',
    value: 'N',
    config: 'coalesce.usecs',
    help: 'the longest an interrupt is held, in microseconds (default 50)',
  },
  {
    name: 'coalesce-frames',
    kind: 'int',
    value: 'N',
    config: 'coalesce.frames',
    help: 'send a held interrupt once N used entries wait (default 64; 0: no limit)',
  },
  {
    name: 'cpus',
    kind: 'list',
    value: 'LIST',
    config: 'cpus',
    help: 'pin worker thread t to the t-th CPU of LIST (e.g. 2,3); a CPU not ours is an error',
  },
  {
    name: 'trace-messages',
    kind: 'string',
    value: 'FILE',
    config: 'trace.messages',
    help: 'write every vhost-user message, decoded, as JSON lines (- for stdout)',
  },
  {
    name: 'trace-rings',
    kind: 'string',
    value: 'FILE',
    config: 'trace.rings',
    help: [
      'every ring step (avail reads, chains, used, notify decisions) as JSON',
      'lines (either data path; on the C++ one it costs throughput)',
    ],
  },
  {
    name: 'pcap',
    kind: 'string',
    value: 'FILE',
    config: 'pcap.file',
    help: 'pcapng capture of every vring (frames as Ethernet and with their virtio-net header) and of the vhost-user messages',
  },
  {
    name: 'pcap-frames',
    kind: 'string',
    value: 'WHICH',
    config: 'pcap.frames',
    needs: 'pcap',
    help: 'both (default) | ethernet (no -vnet copies: half the writing per frame) | vnet (header and frame only)',
  },
  {
    name: 'pcap-snaplen',
    kind: 'int',
    value: 'N',
    config: 'pcap.snapLen',
    needs: 'pcap',
    help: 'frame bytes kept per packet (default 262144)',
  },
  {
    name: 'pcap-max-mb',
    kind: 'int',
    value: 'N',
    config: 'pcap.maxMb',
    needs: 'pcap',
    help: 'start a new file (FILE.1.pcapng, ...) after N MiB',
  },
  {
    name: 'pcap-files',
    kind: 'int',
    value: 'N',
    config: 'pcap.keepFiles',
    needs: 'pcap',
    help: 'with --pcap-max-mb: keep only the newest N files',
  },
  {
    name: 'http',
    kind: 'string',
    value: 'HOST:PORT',
    config: 'http.listen',
    help: [
      'serve /status (JSON), /metrics (Prometheus), /healthz and /rings.html;',
      'loopback only unless http.allowRemote is set in the config file',
    ],
  },
  {
    name: 'tap-mac',
    kind: 'string',
    value: 'MAC',
    config: 'tapMac',
    help: 'host-side MAC of a TAP we create (default: stable, derived from its name)',
  },
  {
    name: 'faults',
    kind: 'string',
    value: 'FILE',
    help: [
      'a fault plan (JSON: seed, rules) applied from the first session on;',
      'overrides `faults` in the config file (docs/faults.md)',
    ],
  },
  {
    name: 'fault-log',
    kind: 'string',
    value: 'FILE',
    config: 'faultLog',
    help: 'every injected fault as a JSON line (- for stdout)',
  },
  { name: 'config', kind: 'string', value: 'FILE', help: 'JSON configuration file; flags override it' },
  {
    name: 'log-level',
    kind: 'string',
    value: 'LEVEL',
    config: 'log.level',
    help: 'trace|debug|info|warn|error|silent (default info)',
  },
  { name: 'print-capabilities', kind: 'boolean', help: 'print the backend capabilities as JSON and exit' },
  { name: 'help', short: 'h', kind: 'boolean', help: 'this text' },
  { name: 'version', short: 'V', kind: 'boolean', help: 'the version' },
];

type ParseArgsOption = { type: 'string' | 'boolean'; short?: string };

/** node:util parseArgs options for every flag and alias. */
export function parseArgsOptions(): Record<string, ParseArgsOption> {
  const out: Record<string, ParseArgsOption> = {};
  for (const f of FLAGS) {
    const type = f.kind === 'boolean' ? 'boolean' : 'string';
    out[f.name] = f.short ? { type, short: f.short } : { type };
    for (const a of f.aliases ?? []) out[a] = { type };
  }
  return out;
}

/** The options section of the usage text. */
export function flagHelp(): string {
  const lines: string[] = [];
  for (const f of FLAGS) {
    const names = [...(f.short ? [`-${f.short}`] : []), ...[f.name, ...(f.aliases ?? [])].map((n) => `--${n}`)];
    const head = `  ${names.map((n) => (f.value ? `${n} ${f.value}` : n)).join(', ')}`;
    const [first, ...rest] = typeof f.help === 'string' ? [f.help] : f.help;
    if (head.length < 25) lines.push(`${head.padEnd(25)}${first}`);
    else lines.push(head, `${' '.repeat(25)}${first}`);
    for (const r of rest) lines.push(`${' '.repeat(25)}${r}`);
  }
  return lines.join('\n');
}

/** The value a flag was given, or undefined; one spelling only (aliases must agree). */
export function flagValue(values: Record<string, string | boolean | undefined>, f: Flag): string | boolean | undefined {
  const given = [f.name, ...(f.aliases ?? [])].map((n) => values[n]).filter((v) => v !== undefined);
  if (new Set(given).size > 1) {
    throw new ConfigError(ErrorCode.Usage, `--${[f.name, ...(f.aliases ?? [])].join(' and --')} name different paths`);
  }
  return given[0];
}

function converted(f: Flag, v: string | boolean): unknown {
  if (typeof v === 'boolean') return v;
  switch (f.kind) {
    case 'int':
      if (!/^\d+$/.test(v)) throw new ConfigError(ErrorCode.Usage, `--${f.name} takes a whole number, not '${v}'`);
      return Number(v);
    case 'list':
      if (!/^\d+(,\d+)*$/.test(v))
        throw new ConfigError(ErrorCode.Usage, `--${f.name} takes a list like 0,1 not '${v}'`);
      return v.split(',').map(Number);
    default:
      return v;
  }
}

function getPath(o: Record<string, unknown>, path: string): unknown {
  return path.split('.').reduce<unknown>((at, k) => (at as Record<string, unknown> | undefined)?.[k], o);
}

/**
 * The config file's object with every given flag written over it at its config path (nested
 * objects copied, never changed in place). A flag whose `needs` is unset afterwards is an error.
 */
export function mergeFlags(
  file: Record<string, unknown>,
  values: Record<string, string | boolean | undefined>,
): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...file };
  for (const f of FLAGS) {
    if (!f.config) continue;
    const v = flagValue(values, f);
    if (v === undefined || v === false) continue;
    const keys = f.config.split('.');
    let at = merged;
    for (const k of keys.slice(0, -1)) {
      const next = at[k];
      at[k] = typeof next === 'object' && next !== null && !Array.isArray(next) ? { ...next } : {};
      at = at[k] as Record<string, unknown>;
    }
    at[keys[keys.length - 1] as string] = converted(f, v);
  }
  for (const f of FLAGS) {
    const need = f.needs && FLAGS.find((n) => n.name === f.needs);
    if (need && need.config && flagValue(values, f) !== undefined && getPath(merged, need.config) === undefined) {
      throw new ConfigError(ErrorCode.Usage, `--${f.name} needs --${need.name} ${need.value ?? ''}`.trim());
    }
  }
  return merged;
}
