/**
 * vhost-user-net command line. Follows the vhost-user "Backend program conventions"
 * (--socket-path, --fd, --print-capabilities) and adds our own options.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { VhostUserNetBackend } from '../backend.js';
import { type Config, parseConfig, readConfigFile, steeringOf, threadMapOf } from '../config/config.js';
import { ConfigError, ErrorCode, VunError } from '../errors.js';
import { featureNames, hex, ProtocolFeature, VirtioFeature } from '../features.js';
import { formatHostBackend, openHostBackend } from '../host/host-backend.js';
import { createLogger, type LogLevel } from '../log.js';
import { loadNative, packageRoot } from '../native.js';
import { NativeDataPlane } from '../net/native-data-plane.js';
import { TsDataPlane } from '../net/ts-data-plane.js';
import { runDemo } from '../demo/demo.js';
import { startHttp } from '../metrics/http.js';
import { formatStatus } from '../metrics/status-text.js';
import { explainFile } from '../trace/explain.js';
import { MessageTrace } from '../trace/message-trace.js';
import type { Observers } from '../trace/observe.js';
import { PcapWriter } from '../trace/pcapng.js';
import { RingTrace } from '../trace/ring-trace.js';
import { OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES, offeredFeatures } from '../vhost-user/session.js';

export const USAGE = `Usage: vhost-user-net [serve] [options]
       vhost-user-net demo [--datapath native|ts]   (as root: a Linux guest on the backend)
       vhost-user-net explain TRACE-FILE            (a --trace-messages file as a timeline)
       vhost-user-net status [--http HOST:PORT]     (a running backend's state, from its --http)

A userspace virtio-net device for QEMU's -netdev vhost-user.

Options:
  --socket PATH, --socket-path PATH
                         vhost-user socket (server mode: created; client mode: dialled)
  --fd N                 serve on an inherited listening unix socket (instead of a path)
  --client               dial the socket (QEMU runs it with server=on) and redial after loss
  --socket-mode MODE     octal file mode of the created socket (default 0600)
  --queues N             queue pairs offered (GET_QUEUE_NUM), 1..64 (default 1)
  --backend SPEC         tap:NAME | af-packet:IFACE | loopback | null[:source=LEN] (default null)
  --datapath KIND        native (C++ workers, default) | ts (the TS reference: slow, for learning)
  --steering POLICY      toeplitz (default) | flow-affinity | none: which receiveq a host frame takes
  --rss-key HEX          40-byte Toeplitz key as 80 hex digits (default: the standard key)
  --threads N            worker threads, queue pairs spread round robin (default: one per pair)
  --poll-us N            busy-poll N microseconds after the last frame before sleeping (default 0)
  --cpus LIST            pin worker thread t to the t-th CPU of LIST (e.g. 2,3)
  --trace-messages FILE  write every vhost-user message, decoded, as JSON lines (- for stdout)
  --trace-rings FILE     every ring step (avail reads, chains, used, notify decisions) as JSON
                         lines (either data path; on the C++ one it costs throughput)
  --pcap FILE            pcapng capture of every vring, virtio-net header in each packet comment
  --pcap-snaplen N       frame bytes kept per packet (default 262144)
  --pcap-max-mb N        start a new file (FILE.1.pcapng, ...) after N MiB
  --pcap-files N         with --pcap-max-mb: keep only the newest N files
  --http HOST:PORT       serve /status (JSON) and /metrics (Prometheus); loopback only unless
                         http.allowRemote is set in the config file
  --tap-mac MAC          host-side MAC of a TAP we create (default: stable, derived from its name)
  --config FILE          JSON configuration file; flags override it
  --log-level LEVEL      trace|debug|info|warn|error|silent (default info)
  --print-capabilities   print the backend capabilities as JSON and exit
  -h, --help             this text
  -V, --version          the version

Example:
  vhost-user-net --socket /run/vun.sock --backend tap:vun0
  qemu-system-x86_64 ... -chardev socket,id=c0,path=/run/vun.sock \\
    -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0
`;

export function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** vhost-user.rst "Backend program conventions": --print-capabilities prints this JSON. */
export function capabilities(): Record<string, unknown> {
  return {
    type: 'net',
    features: featureNames(OFFERED_FEATURES, VirtioFeature),
    protocolFeatures: featureNames(OFFERED_PROTOCOL_FEATURES, ProtocolFeature),
  };
}

/** Parses argv into a validated Config (or a request for help/version/capabilities). */
export function parseCommandLine(
  argv: string[],
):
  | { action: 'help' | 'version' | 'capabilities' }
  | { action: 'demo'; datapath: 'native' | 'ts' }
  | { action: 'explain'; file: string }
  | { action: 'status'; http: string }
  | { action: 'serve'; config: Config; traceMessages?: string; traceRings?: string } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        socket: { type: 'string' },
        'socket-path': { type: 'string' },
        fd: { type: 'string' },
        client: { type: 'boolean' },
        'socket-mode': { type: 'string' },
        queues: { type: 'string' },
        backend: { type: 'string' },
        datapath: { type: 'string' },
        steering: { type: 'string' },
        cpus: { type: 'string' },
        threads: { type: 'string' },
        'poll-us': { type: 'string' },
        'trace-messages': { type: 'string' },
        'trace-rings': { type: 'string' },
        pcap: { type: 'string' },
        'pcap-snaplen': { type: 'string' },
        'pcap-max-mb': { type: 'string' },
        'pcap-files': { type: 'string' },
        http: { type: 'string' },
        'rss-key': { type: 'string' },
        'tap-mac': { type: 'string' },
        config: { type: 'string' },
        'log-level': { type: 'string' },
        'print-capabilities': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
    });
  } catch (err) {
    throw new ConfigError(ErrorCode.Usage, (err as Error).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return { action: 'help' };
  if (v.version) return { action: 'version' };
  if (v['print-capabilities']) return { action: 'capabilities' };
  if (positionals[0] === 'status' && positionals.length === 1) {
    return { action: 'status', http: v.http ?? '127.0.0.1:9180' };
  }
  if (positionals[0] === 'explain') {
    if (positionals.length !== 2) throw new ConfigError(ErrorCode.Usage, 'explain takes one trace file');
    return { action: 'explain', file: positionals[1] as string };
  }
  if (positionals[0] === 'demo' && positionals.length === 1) {
    const dp = v.datapath ?? 'native';
    if (dp !== 'native' && dp !== 'ts')
      throw new ConfigError(ErrorCode.Usage, `--datapath takes native or ts, not '${dp}'`);
    return { action: 'demo', datapath: dp };
  }
  if (positionals.length > 1 || (positionals[0] !== undefined && positionals[0] !== 'serve')) {
    throw new ConfigError(ErrorCode.Usage, `unknown command '${positionals.join(' ')}' (try --help)`);
  }
  if (v.socket !== undefined && v['socket-path'] !== undefined && v.socket !== v['socket-path']) {
    throw new ConfigError(ErrorCode.Usage, '--socket and --socket-path name different paths');
  }
  const file = v.config ? readConfigFile(v.config) : {};
  const socket = { ...((file.socket as Record<string, unknown> | undefined) ?? {}) };
  const path = v.socket ?? v['socket-path'];
  if (path !== undefined) socket.path = path;
  if (v.client) socket.client = true;
  const int = (flag: string, s: string): number => {
    if (!/^\d+$/.test(s)) throw new ConfigError(ErrorCode.Usage, `--${flag} takes a whole number, not '${s}'`);
    return Number(s);
  };
  if (v.fd !== undefined) socket.fd = int('fd', v.fd);
  if (v['socket-mode'] !== undefined) socket.mode = v['socket-mode'];
  const merged: Record<string, unknown> = { ...file, socket };
  if (v.queues !== undefined) merged.queues = int('queues', v.queues);
  if (v.backend !== undefined) merged.backend = v.backend;
  if (v.datapath !== undefined) merged.datapath = v.datapath;
  if (v.threads !== undefined) merged.threads = int('threads', v.threads);
  if (v['poll-us'] !== undefined) merged.pollUs = int('poll-us', v['poll-us']);
  const pcapFlags = ['pcap', 'pcap-snaplen', 'pcap-max-mb', 'pcap-files'] as const;
  if (pcapFlags.some((f) => v[f] !== undefined)) {
    const pc = { ...((file.pcap as Record<string, unknown> | undefined) ?? {}) };
    if (v.pcap !== undefined) pc.file = v.pcap;
    if (v['pcap-snaplen'] !== undefined) pc.snapLen = int('pcap-snaplen', v['pcap-snaplen']);
    if (v['pcap-max-mb'] !== undefined) pc.maxMb = int('pcap-max-mb', v['pcap-max-mb']);
    if (v['pcap-files'] !== undefined) pc.keepFiles = int('pcap-files', v['pcap-files']);
    if (pc.file === undefined) throw new ConfigError(ErrorCode.Usage, '--pcap-* options need --pcap FILE');
    merged.pcap = pc;
  }
  if (v.http !== undefined)
    merged.http = { ...((file.http as Record<string, unknown> | undefined) ?? {}), listen: v.http };
  if (v.cpus !== undefined) {
    if (!/^\d+(,\d+)*$/.test(v.cpus))
      throw new ConfigError(ErrorCode.Usage, `--cpus takes a list like 0,1 not '${v.cpus}'`);
    merged.cpus = v.cpus.split(',').map(Number);
  }
  if (v.steering !== undefined || v['rss-key'] !== undefined) {
    const st = { ...((file.steering as Record<string, unknown> | undefined) ?? {}) };
    if (v.steering !== undefined) st.policy = v.steering;
    if (v['rss-key'] !== undefined) st.key = v['rss-key'];
    merged.steering = st;
  }
  if (v['tap-mac'] !== undefined) merged.tapMac = v['tap-mac'];
  if (v['log-level'] !== undefined) {
    merged.log = { ...((file.log as Record<string, unknown> | undefined) ?? {}), level: v['log-level'] };
  }
  return {
    action: 'serve',
    config: parseConfig(merged, v.config ? `configuration (${v.config} and flags)` : 'arguments'),
    traceMessages: v['trace-messages'],
    traceRings: v['trace-rings'],
  };
}

export async function main(argv: string[]): Promise<number> {
  let cmd;
  try {
    cmd = parseCommandLine(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vhost-user-net: ${err.message}\n[${err.code}]\n`);
      return 2;
    }
    throw err;
  }
  if (cmd.action === 'status') {
    try {
      const res = await fetch(`http://${cmd.http}/status`);
      const st = (await res.json()) as Record<string, unknown>;
      process.stdout.write(`${formatStatus(st).join('\n')}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(
        `vhost-user-net status: cannot reach http://${cmd.http}/status (${(err as Error).message}); start the backend with --http\n`,
      );
      return 1;
    }
  }
  if (cmd.action === 'explain') {
    try {
      process.stdout.write(`${explainFile(cmd.file).join('\n')}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`vhost-user-net explain: ${(err as Error).message}\n`);
      return 1;
    }
  }
  if (cmd.action === 'demo') {
    try {
      return await runDemo({ datapath: cmd.datapath });
    } catch (err) {
      process.stderr.write(`vhost-user-net demo: ${(err as Error).message}\n`);
      return 1;
    }
  }
  if (cmd.action !== 'serve') {
    if (cmd.action === 'help') process.stdout.write(USAGE);
    else if (cmd.action === 'version') process.stdout.write(`vhost-user-net ${version()}\n`);
    else process.stdout.write(`${JSON.stringify(capabilities(), null, 2)}\n`);
    return 0;
  }
  const { config } = cmd;
  const log = createLogger(config.log.level as LogLevel);
  let backend: VhostUserNetBackend;
  try {
    const native = loadNative();
    const observe: Observers = {
      ringTrace: cmd.traceRings ? new RingTrace(cmd.traceRings) : undefined,
      capture: config.pcap
        ? new PcapWriter(config.pcap.file, config.queues * 2, {
            snapLen: config.pcap.snapLen,
            maxBytes: (config.pcap.maxMb ?? 0) * 1024 * 1024,
            keepFiles: config.pcap.keepFiles,
            application: `vhost-user-net ${version()}`,
            onError: (error) =>
              log.error({ code: ErrorCode.OutputFile, error }, 'capture stopped: a write failed (frames keep flowing)'),
          })
        : undefined,
    };
    const host = openHostBackend(native, config.hostBackend, { queuePairs: config.queues, tapMac: config.tapMac });
    log.info(
      {
        version: version(),
        backend: formatHostBackend(config.hostBackend),
        hostIface: host.name,
        hostMac: host.mac,
        datapath: config.datapath,
        steering: config.steering.policy,
        queuePairs: config.queues,
        features: hex(offeredFeatures(config.queues)),
        protocolFeatures: hex(OFFERED_PROTOCOL_FEATURES),
      },
      'starting vhost-user-net',
    );
    backend = new VhostUserNetBackend(
      {
        socketPath: config.socket.path,
        listenFd: config.socket.fd,
        client: config.socket.client,
        socketMode: config.socket.mode,
        queuePairs: config.queues,
        reconnectMinMs: config.reconnect.minMs,
        reconnectMaxMs: config.reconnect.maxMs,
        trace: cmd.traceMessages ? new MessageTrace(cmd.traceMessages) : undefined,
      },
      log,
      (n, l, events) =>
        config.datapath === 'ts'
          ? new TsDataPlane(n, { queuePairs: config.queues, host, steering: steeringOf(config), observe }, l, events)
          : new NativeDataPlane(
              n,
              {
                queuePairs: config.queues,
                host,
                steering: steeringOf(config),
                cpus: config.cpus,
                threadOf: threadMapOf(config),
                pollUs: config.pollUs,
                observe,
              },
              l,
              events,
            ),
      native,
    );
    backend.start();
    let http: { close(): void } | undefined;
    if (config.http) {
      const [h, p] = [
        config.http.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''),
        Number(/:(\d+)$/.exec(config.http.listen)?.[1]),
      ];
      const started = await startHttp(backend, h, p, observe);
      http = started.server;
      log.info({ listen: `${h}:${started.port}` }, 'http: /status and /metrics');
    }
    const shutdown = (signal: string) => {
      log.info({ signal }, 'shutting down');
      http?.close();
      backend.stop();
      host.close();
      observe.ringTrace?.close();
      if (observe.capture) {
        observe.capture.close();
        log.info(
          { files: observe.capture.allFiles, frames: observe.capture.frames, lost: observe.capture.dropped },
          'capture closed',
        );
      }
    };
    process.on('SIGUSR1', () => backend.logCounters());
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  } catch (err) {
    if (err instanceof VunError) {
      log.fatal({ code: err.code, ...err.details }, err.message);
      return err instanceof ConfigError ? 2 : 1;
    }
    throw err;
  }
  return await new Promise<number>((resolve) => {
    // The event loop keeps running while the backend listens; resolve when it is stopped.
    process.once('beforeExit', () => resolve(0));
  });
}
