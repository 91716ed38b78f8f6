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
import { dataPlaneFactory } from '../net/make-data-plane.js';
import { runDemo } from '../demo/demo.js';
import { flagHelp, mergeFlags, parseArgsOptions } from './flags.js';
import { startHttp } from '../metrics/http.js';
import { Notifier, systemdListenFd } from '../service/systemd.js';
import { decideReload } from './reload.js';
import { dropPrivileges, groupId, userId } from '../service/users.js';
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
${flagHelp()}

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
  | { action: 'serve'; config: Config; faultsFile?: string } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: parseArgsOptions(),
    });
  } catch (err) {
    throw new ConfigError(ErrorCode.Usage, (err as Error).message);
  }
  const { values: v, positionals } = parsed;
  const str = (name: string): string | undefined => (typeof v[name] === 'string' ? (v[name] as string) : undefined);
  if (v.help) return { action: 'help' };
  if (v.version) return { action: 'version' };
  if (v['print-capabilities']) return { action: 'capabilities' };
  if (positionals[0] === 'status' && positionals.length === 1) {
    return { action: 'status', http: str('http') ?? '127.0.0.1:9180' };
  }
  if (positionals[0] === 'explain') {
    if (positionals.length !== 2) throw new ConfigError(ErrorCode.Usage, 'explain takes one trace file');
    return { action: 'explain', file: positionals[1] as string };
  }
  if (positionals[0] === 'demo' && positionals.length === 1) {
    const dp = str('datapath') ?? 'native';
    if (dp !== 'native' && dp !== 'ts')
      throw new ConfigError(ErrorCode.Usage, `--datapath takes native or ts, not '${dp}'`);
    return { action: 'demo', datapath: dp };
  }
  if (positionals.length > 1 || (positionals[0] !== undefined && positionals[0] !== 'serve')) {
    throw new ConfigError(ErrorCode.Usage, `unknown command '${positionals.join(' ')}' (try --help)`);
  }
  const configFile = str('config');
  const merged = mergeFlags(configFile ? readConfigFile(configFile) : {}, v);
  // Socket activation: with no socket given, the one systemd passed (LISTEN_FDS).
  const socket = (merged.socket ?? {}) as Record<string, unknown>;
  if (socket.path === undefined && socket.fd === undefined) {
    const fd = systemdListenFd();
    if (fd !== undefined) merged.socket = { ...socket, fd };
  }
  return {
    action: 'serve',
    config: parseConfig(merged, configFile ? `configuration (${configFile} and flags)` : 'arguments'),
    faultsFile: str('faults'),
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
    // --cpus is applied when a front-end connects: check it now, while an error can stop us.
    const allowed = new Set(native.allowedCpus());
    const notOurs = config.cpus.filter((c) => !allowed.has(c));
    if (notOurs.length) {
      throw new ConfigError(ErrorCode.ConfigInvalid, 'invalid arguments', [
        `cpus: ${notOurs.join(',')} not in this process's CPU set (${[...allowed].join(',')})`,
      ]);
    }
    const captureOf = (c: Config): PcapWriter | undefined =>
      c.pcap
        ? new PcapWriter(c.pcap.file, c.queues * 2, {
            snapLen: c.pcap.snapLen,
            maxBytes: (c.pcap.maxMb ?? 0) * 1024 * 1024,
            keepFiles: c.pcap.keepFiles,
            application: `vhost-user-net ${version()}`,
            onError: (error) =>
              log.error({ code: ErrorCode.OutputFile, error }, 'capture stopped: a write failed (frames keep flowing)'),
          })
        : undefined;
    const ringTraceOf = (c: Config) => (c.trace.rings ? new RingTrace(c.trace.rings) : undefined);
    const messageTraceOf = (c: Config) => (c.trace.messages ? new MessageTrace(c.trace.messages) : undefined);
    // The observers every session's data plane is built with (and /status reads); a reload
    // replaces the capture here for later sessions and tells the current one.
    const observe: Observers = {
      ringTrace: ringTraceOf(config),
      capture: captureOf(config),
    };
    const host = openHostBackend(native, config.hostBackend, {
      queuePairs: config.queues,
      tapMac: config.tapMac,
      mtu: config.mtu,
    });
    log.info(
      {
        version: version(),
        backend: formatHostBackend(config.hostBackend),
        hostIface: host.name,
        hostMac: host.mac,
        datapath: config.datapath,
        steering: config.steering.policy,
        queuePairs: config.queues,
        features: hex(offeredFeatures(config.queues, config.ring)),
        ring: config.ring,
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
        socketOwner:
          config.socket.owner !== undefined || config.socket.group !== undefined
            ? {
                uid: config.socket.owner !== undefined ? userId(config.socket.owner).uid : -1,
                gid: config.socket.group !== undefined ? groupId(config.socket.group) : -1,
              }
            : undefined,
        queuePairs: config.queues,
        ring: config.ring,
        reconnectMinMs: config.reconnect.minMs,
        reconnectMaxMs: config.reconnect.maxMs,
        trace: messageTraceOf(config),
        faultLog: config.faultLog === '-' ? process.stdout : config.faultLog,
      },
      log,
      dataPlaneFactory({
        datapath: config.datapath,
        queuePairs: config.queues,
        host,
        steering: steeringOf(config),
        cpus: config.cpus,
        threadOf: threadMapOf(config),
        pollUs: config.pollUs,
        coalesce: config.coalesce,
        observe,
      }),
      native,
    );
    // A fault plan from --faults FILE or the config file: a bad one stops start-up (exit 2).
    if (cmd.faultsFile) backend.loadFaults(readConfigFile(cmd.faultsFile), cmd.faultsFile);
    else if (config.faults !== undefined) backend.loadFaults(config.faults, 'config file: faults');
    backend.start();
    let http: { close(): void } | undefined;
    if (config.http) {
      const [h, p] = [
        config.http.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''),
        Number(/:(\d+)$/.exec(config.http.listen)?.[1]),
      ];
      const started = await startHttp(backend, h, p, observe, {
        coalesce: { ...config.coalesce, datapath: config.datapath },
      });
      http = started.server;
      log.info({ listen: `${h}:${started.port}` }, 'http: /status and /metrics');
    }
    // --user: everything that needs root is open (socket, host devices, outputs); drop now.
    if (config.user) {
      const to = dropPrivileges(config.user);
      log.info({ user: config.user, ...to }, 'privileges dropped (docs/privileges.md says what that leaves)');
    }
    // systemd (Type=notify): serving from here on.
    const notifier = new Notifier(native, process.env, (err) =>
      log.warn({ err: err.message }, 'systemd notification not sent'),
    );
    notifier.ready(`serving vhost-user on ${config.socket.path ?? `fd ${config.socket.fd}`}`);
    if (notifier.active) log.info('systemd told: READY=1');
    const shutdown = (signal: string) => {
      log.info({ signal }, 'shutting down');
      notifier.stopping();
      http?.close();
      backend.stop();
      host.close();
      observe.ringTrace?.close();
      backend.setMessageTrace(undefined)?.close();
      if (observe.capture) {
        observe.capture.close();
        log.info(
          { files: observe.capture.allFiles, frames: observe.capture.frames, lost: observe.capture.dropped },
          'capture closed',
        );
      }
    };
    process.on('SIGUSR1', () => backend.logCounters());
    // SIGHUP: read the configuration again; apply what may change while serving (src/cli/reload.ts).
    const planOf = (c: Config, file: string | undefined): unknown => (file ? readConfigFile(file) : c.faults);
    let current = { config, plan: planOf(config, cmd.faultsFile) };
    process.on('SIGHUP', () => {
      try {
        const next = parseCommandLine(argv);
        if (next.action !== 'serve') return;
        const plan = planOf(next.config, next.faultsFile);
        const planChanged = JSON.stringify(plan) !== JSON.stringify(current.plan);
        const outcome = decideReload(current.config, next.config, planChanged);
        if (outcome.kind === 'refused') {
          log.error(
            { options: outcome.options },
            `reload refused, nothing changed: ${outcome.options.join(', ')} cannot change while serving (restart for that)`,
          );
          return;
        }
        // What can fail comes first, so that a failure changes nothing: the new output files
        // are opened, then the plan is checked and loaded (a bad one throws before it applies).
        const has = (o: string) => outcome.changed.includes(o);
        const traceChanged = (k: 'rings' | 'messages') =>
          has('trace') && current.config.trace[k] !== next.config.trace[k];
        const opened: { close(): void }[] = [];
        const open = <T extends { close(): void } | undefined>(w: T): T => {
          if (w) opened.push(w);
          return w;
        };
        let outputs: { capture?: PcapWriter; ringTrace?: RingTrace; messages?: MessageTrace } = {};
        try {
          outputs = {
            ...(has('pcap') ? { capture: open(captureOf(next.config)) } : {}),
            ...(traceChanged('rings') ? { ringTrace: open(ringTraceOf(next.config)) } : {}),
            ...(traceChanged('messages') ? { messages: open(messageTraceOf(next.config)) } : {}),
          };
          if (planChanged) {
            if (plan === undefined) backend.clearFaults();
            else backend.loadFaults(plan, `reload (${next.faultsFile ?? 'config file: faults'})`);
          }
        } catch (err) {
          for (const w of opened) w.close();
          throw err;
        }
        if (has('steering')) backend.setSteering(steeringOf(next.config));
        if (has('pcap') || traceChanged('rings')) {
          const old = { ...observe };
          if (has('pcap')) observe.capture = outputs.capture;
          if (traceChanged('rings')) observe.ringTrace = outputs.ringTrace;
          backend.setObservers({ ...observe });
          if (old.capture !== observe.capture) old.capture?.close();
          if (old.ringTrace !== observe.ringTrace) old.ringTrace?.close();
        }
        if (traceChanged('messages')) backend.setMessageTrace(outputs.messages)?.close();
        log.level = next.config.log.level;
        current = { config: next.config, plan };
        log.info({ changed: outcome.changed }, 'configuration reloaded (SIGHUP)');
      } catch (err) {
        const e = err as { code?: string; message: string; issues?: string[] };
        log.error({ code: e.code, issues: e.issues }, `reload refused, nothing changed: ${e.message}`);
      }
    });
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
