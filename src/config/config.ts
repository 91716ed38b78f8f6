/**
 * Configuration: a JSON file (`--config`) and command-line flags, flags winning. Validated
 * with zod; every problem is reported with its path, all at once.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, ErrorCode } from '../errors.js';
import { type HostBackendSpec, parseHostBackend } from '../host/host-backend.js';
import { COALESCE_DEFAULTS } from '../net/coalesce.js';
import { defaultRss, type Steering } from '../net/rss.js';

/** The most queue pairs we serve: vring file payloads carry an 8-bit index (256 vrings). */
export const MAX_QUEUE_PAIRS = 64;

const octalMode = z.union(
  [
    z.number().int().min(0).max(0o777),
    z
      .string()
      .regex(/^0?[0-7]{3}$/, 'must be an octal file mode such as "0600"')
      .transform((s) => parseInt(s, 8)),
  ],
  { error: 'must be an octal file mode such as "0600"' },
);

export const configSchema = z
  .object({
    socket: z
      .object({
        path: z.string().min(1).max(107, 'unix socket paths are at most 107 bytes').optional(),
        client: z.boolean().default(false),
        fd: z.number().int().min(0).optional(),
        mode: octalMode.default(0o600),
        /** Owner and group of the created socket (names or numbers): QEMU's user can then connect. */
        owner: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
        group: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
      })
      .strict()
      .default({ client: false, mode: 0o600 }),
    /**
     * Drop to this user (a name or uid; its primary group, or USER:GROUP) once the socket,
     * the host devices and the output files are open.
     */
    user: z
      .string()
      .regex(/^[^:\s]+(:[^:\s]+)?$/, 'USER or USER:GROUP')
      .optional(),
    queues: z.number().int().min(1).max(MAX_QUEUE_PAIRS).default(1),
    /** The host TAP's MTU, set at start and kept (the front-end's NET_SET_MTU then changes nothing). */
    mtu: z.number().int().min(68).max(65535).optional(),
    backend: z.string().default('null'),
    /** Receive steering over queue pairs (the device's choice under VIRTIO_NET_F_MQ). */
    steering: z
      .object({
        policy: z.enum(['none', 'toeplitz', 'flow-affinity']).default('toeplitz'),
        /** 40-byte Toeplitz key as 80 hex digits; default: the standard key. */
        key: z
          .string()
          .regex(/^[0-9a-fA-F]{80}$/, 'must be 80 hex digits (40 bytes)')
          .optional(),
        /** Indirection table: queue pair per bucket, 1..128 entries. */
        table: z.array(z.number().int().min(0)).min(1).max(128).optional(),
      })
      .strict()
      .default({ policy: 'toeplitz' }),
    /** Pin worker thread t to cpus[t % length] (default: not pinned). */
    cpus: z.array(z.number().int().min(0).max(1023)).max(1024).default([]),
    /** Live introspection: /status and /metrics (off unless set). */
    http: z
      .object({
        listen: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$/, 'must be HOST:PORT'),
        /** Listening on anything but loopback must be asked for. */
        allowRemote: z.boolean().default(false),
      })
      .strict()
      .optional(),
    /** Busy-poll this many microseconds after the last frame before a worker sleeps. */
    pollUs: z.number().int().min(0).max(1_000_000).default(0),
    /**
     * Interrupt coalescing per vring (C++ data plane, vrings without a fault plan): `adaptive`
     * sends at once when the last interrupt is `usecs` old and holds it until then otherwise;
     * `static` holds every one up to `usecs`; both send early once `frames` used entries wait.
     */
    coalesce: z
      .object({
        mode: z.enum(['off', 'static', 'adaptive']).default('adaptive'),
        usecs: z.number().int().min(0).max(1_000_000).default(COALESCE_DEFAULTS.usecs),
        frames: z.number().int().min(0).max(65536).default(COALESCE_DEFAULTS.frames),
      })
      .strict()
      .prefault({}),
    /** Worker threads: pairs spread round robin over this many (default: one per pair). */
    threads: z.number().int().min(1).optional(),
    /** Or an explicit map: pair p runs on thread threadOf[p]. */
    threadOf: z.array(z.number().int().min(0)).optional(),
    /** Traces as JSON lines: every vhost-user message (`--trace-messages`, `-`: stdout), every ring step (`--trace-rings`). */
    trace: z
      .object({ messages: z.string().min(1).optional(), rings: z.string().min(1).optional() })
      .strict()
      .default({}),
    /** pcapng capture of every vring (`--pcap`): frames with their virtio-net headers. */
    pcap: z
      .object({
        file: z.string().min(1),
        /** Frame bytes kept after the virtio-net header. */
        snapLen: z.number().int().min(64).max(262144).default(262144),
        /** Start a new file when this many MiB are written. */
        maxMb: z
          .number()
          .int()
          .min(1)
          .max(1 << 20)
          .optional(),
        /** With maxMb: keep at most this many files (the oldest are removed). */
        keepFiles: z.number().int().min(1).max(100_000).optional(),
        /**
         * Which packets each frame makes: plain Ethernet (`receiveqN`), with its virtio-net
         * header (`receiveqN-vnet`), or both (the default).
         */
        frames: z.enum(['both', 'ethernet', 'vnet']).default('both'),
      })
      .strict()
      .optional(),
    /** A fault plan (validated by src/faults/plan.ts when the backend loads it). */
    faults: z.unknown().optional(),
    /** Where injected faults are written as JSON lines ('-': stdout). */
    faultLog: z.string().min(1).optional(),
    /** Which ring implementation moves frames: the C++ workers, or the TS reference (slow). */
    datapath: z.enum(['native', 'ts']).default('native'),
    /**
     * Ring layouts offered: auto (VIRTIO_F_RING_PACKED offered, the driver chooses), split (not
     * offered), packed (offered and required: a driver that does not ack it is refused).
     */
    ring: z.enum(['auto', 'split', 'packed']).default('auto'),
    /**
     * The ring journal: a file where packed rings keep their positions so a restarted backend
     * resumes them (src/virtio/ring-journal.ts); 'off': none. Default: the socket path with
     * `.rings` appended, dropped with a warning when it cannot be opened.
     */
    ringState: z.string().min(1).optional(),
    /** Host-side MAC of a TAP we create (default: derived from its name, stable). */
    tapMac: z
      .string()
      .regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'must be six hex pairs like 02:00:00:00:00:01')
      .optional(),
    reconnect: z
      .object({
        minMs: z.number().int().min(10).max(60_000).default(100),
        maxMs: z.number().int().min(10).max(600_000).default(5_000),
      })
      .strict()
      .default({ minMs: 100, maxMs: 5_000 }),
    log: z
      .object({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
      })
      .strict()
      .default({ level: 'info' }),
  })
  .strict();

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema> & { hostBackend: HostBackendSpec };

function issuesOf(err: z.ZodError): string[] {
  return err.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
}

/** Validates a configuration object (already merged from file and flags). */
export function parseConfig(input: unknown, source = 'configuration'): Config {
  const r = configSchema.safeParse(input);
  if (!r.success) throw new ConfigError(ErrorCode.ConfigInvalid, `invalid ${source}`, issuesOf(r.error));
  const c = r.data;
  const problems: string[] = [];
  if (c.socket.client && c.socket.fd !== undefined)
    problems.push('socket.fd: an inherited listening socket cannot be used in client mode');
  if (c.socket.path === undefined && c.socket.fd === undefined) problems.push('socket.path: required (or socket.fd)');
  // vhost-user.rst "Backend program conventions": --fd "is incompatible with --socket-path".
  if (c.socket.path !== undefined && c.socket.fd !== undefined)
    problems.push('socket.fd: --fd and --socket-path (socket.path) name two sockets; give one');
  if (c.reconnect.minMs > c.reconnect.maxMs) problems.push('reconnect.minMs: larger than reconnect.maxMs');
  if (c.threads !== undefined && c.threads > c.queues)
    problems.push(`threads: ${c.threads} threads for ${c.queues} queue pairs`);
  if (c.threads !== undefined && c.threadOf) problems.push('threadOf: give threads or threadOf, not both');
  if (c.threadOf && c.threadOf.length !== c.queues)
    problems.push(`threadOf: ${c.threadOf.length} entries for ${c.queues} queue pairs`);
  if (c.threadOf?.some((t) => t >= c.queues)) problems.push('threadOf: thread indexes run from 0 to queues-1');
  if (c.http) {
    const host = c.http.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    if (!c.http.allowRemote && !(host === 'localhost' || host === '::1' || /^127\./.test(host))) {
      problems.push(`http.listen: ${host} is not loopback; set http.allowRemote to serve it`);
    }
  }
  const bad = c.steering.table?.find((q) => q >= c.queues);
  if (bad !== undefined) problems.push(`steering.table: queue pair ${bad} does not exist (queues: ${c.queues})`);
  const hostBackend = parseHostBackend(c.backend);
  if (hostBackend.kind === 'af-packet' && hostBackend.rxRing && c.datapath === 'ts')
    problems.push('backend: af-packet rx-ring is read by the native data path only (datapath: native)');
  if (problems.length) throw new ConfigError(ErrorCode.ConfigInvalid, `invalid ${source}`, problems);
  return { ...c, hostBackend };
}

/** Where the ring journal goes (ringState), and whether start-up stops when it cannot be opened. */
export function ringStateOf(c: Pick<Config, 'ringState' | 'socket'>): { path: string; required: boolean } | undefined {
  if (c.ringState === 'off') return undefined;
  if (c.ringState !== undefined) return { path: c.ringState, required: true };
  return c.socket.path !== undefined ? { path: `${c.socket.path}.rings`, required: false } : undefined;
}

/** Pair -> worker thread, from `threads` (round robin) or `threadOf`; undefined: one each. */
export function threadMapOf(c: Config): number[] | undefined {
  if (c.threadOf) return c.threadOf;
  if (c.threads) return Array.from({ length: c.queues }, (_, p) => p % (c.threads as number));
  return undefined;
}

/** The steering a configuration asks for, with the defaults filled in. */
export function steeringOf(c: Config): Steering {
  const d = defaultRss(c.queues);
  return {
    policy: c.steering.policy,
    rss: { key: c.steering.key ? Buffer.from(c.steering.key, 'hex') : d.key, table: c.steering.table ?? d.table },
  };
}

/** Reads a JSON configuration file; syntax errors name the file and position. */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(ErrorCode.ConfigFile, `cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new ConfigError(ErrorCode.ConfigFile, `config file ${path}: top level must be a JSON object`);
    }
    return v as Record<string, unknown>;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(ErrorCode.ConfigFile, `config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}
