/**
 * `vhost-user-net [serve]`: a backend wired from a Config and run until a signal stops it. The
 * steps, in order: the CPUs checked, the output files and host backend opened, the backend built
 * (its data plane from make-data-plane.ts) and started with its fault plan, HTTP, privileges
 * dropped, systemd told; then the signals: SIGHUP reloads (reload.ts), SIGUSR1 logs the
 * counters, SIGINT and SIGTERM shut down.
 */
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import { VhostUserNetBackend } from '../backend.js';
import { type Config, readConfigFile, ringStateOf, steeringOf, threadMapOf } from '../config/config.js';
import { ConfigError, ErrorCode, VunError } from '../errors.js';
import { hex } from '../features.js';
import { formatHostBackend, openHostBackend, type OpenHostBackend } from '../host/host-backend.js';
import { createLogger, type LogLevel } from '../log.js';
import { startHttp } from '../metrics/http.js';
import { loadNative, type NativeBinding } from '../native.js';
import { dataPlaneFactory } from '../net/make-data-plane.js';
import { Notifier } from '../service/systemd.js';
import { dropPrivileges, groupId, userId } from '../service/users.js';
import type { Observers } from '../trace/observe.js';
import { OFFERED_PROTOCOL_FEATURES, offeredFeatures } from '../vhost-user/session.js';
import { parseCommandLine, type ServeCommand, version } from './command.js';
import { Outputs } from './outputs.js';
import { Reloader } from './reload.js';

export async function serve(cmd: ServeCommand, argv: string[]): Promise<number> {
  const { config } = cmd;
  const log = createLogger(config.log.level as LogLevel);
  let host: OpenHostBackend | undefined;
  let http: { close(): void } | undefined;
  let backend: VhostUserNetBackend | undefined;
  try {
    const native = loadNative();
    checkCpus(native, config);
    const outputs = new Outputs(log, `vhost-user-net ${version()}`);
    // The observers every session's data plane is built with (and /status reads); a reload
    // replaces the capture here for later sessions and tells the current one.
    const observe: Observers = { ringTrace: outputs.ringTrace(config), capture: outputs.capture(config) };
    const hostBackend = openHostBackend(native, config.hostBackend, {
      queuePairs: config.queues,
      tapMac: config.tapMac,
      mtu: config.mtu,
    });
    host = hostBackend;
    logStart(log, config, hostBackend);
    const served = makeBackend(config, log, native, hostBackend, observe, outputs);
    backend = served;
    // A fault plan from --faults FILE or the config file: a bad one stops start-up (exit 2).
    if (cmd.faultsFile) served.loadFaults(readConfigFile(cmd.faultsFile), cmd.faultsFile);
    else if (config.faults !== undefined) served.loadFaults(config.faults, 'config file: faults');
    // HTTP before the socket: an address that cannot be bound stops start-up (exit 2) with
    // nothing serving yet.
    http = await startHttpIf(config, served, observe, log);
    served.start();
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
      served.stop();
      hostBackend.close();
      closeOutputs(served, observe, log);
    };
    // A connected --fd is one session: when it ends, so does the process (exit 0).
    served.once('finished', () => shutdown('the --fd connection closed'));
    process.on('SIGUSR1', () => served.logCounters());
    // SIGHUP: read the configuration again; apply what may change while serving.
    const reloader = new Reloader(served, outputs, observe, log, cmd);
    process.on('SIGHUP', () => reloader.reload(() => parseCommandLine(argv)));
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  } catch (err) {
    // Whatever was opened before the error is closed, so the process exits with its code.
    http?.close();
    backend?.stop();
    host?.close();
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

/** --cpus is applied when a front-end connects: checked now, while an error can stop us. */
function checkCpus(native: NativeBinding, config: Config): void {
  const allowed = new Set(native.allowedCpus());
  const notOurs = config.cpus.filter((c) => !allowed.has(c));
  if (notOurs.length) {
    throw new ConfigError(ErrorCode.ConfigInvalid, 'invalid arguments', [
      `cpus: ${notOurs.join(',')} not in this process's CPU set (${[...allowed].join(',')})`,
    ]);
  }
}

function logStart(log: Logger, config: Config, host: OpenHostBackend): void {
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
}

function makeBackend(
  config: Config,
  log: Logger,
  native: NativeBinding,
  host: OpenHostBackend,
  observe: Observers,
  outputs: Outputs,
): VhostUserNetBackend {
  const { socket } = config;
  return new VhostUserNetBackend(
    {
      socketPath: socket.path,
      listenFd: socket.fd,
      client: socket.client,
      socketMode: socket.mode,
      socketOwner:
        socket.owner !== undefined || socket.group !== undefined
          ? {
              uid: socket.owner !== undefined ? userId(socket.owner).uid : -1,
              gid: socket.group !== undefined ? groupId(socket.group) : -1,
            }
          : undefined,
      queuePairs: config.queues,
      ring: config.ring,
      reconnectMinMs: config.reconnect.minMs,
      reconnectMaxMs: config.reconnect.maxMs,
      trace: outputs.messageTrace(config),
      faultLog: config.faultLog === '-' ? process.stdout : config.faultLog,
      observers: observe,
      ringState: ringStateOf(config),
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
}

async function startHttpIf(
  config: Config,
  backend: VhostUserNetBackend,
  observe: Observers,
  log: Logger,
): Promise<{ close(): void } | undefined> {
  if (!config.http) return undefined;
  const h = config.http.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  const p = Number(/:(\d+)$/.exec(config.http.listen)?.[1]);
  // 127.0.0.1 binds even while lo is down (a fresh network namespace), but nothing could
  // connect: the same error as an address that does not exist.
  if (/^127\./.test(h) && !Object.values(networkInterfaces()).some((a) => a?.some((x) => x.address === '127.0.0.1'))) {
    throw new ConfigError(ErrorCode.HttpListen, `--http: cannot listen on ${config.http.listen}`, [
      'EADDRNOTAVAIL: lo is down in this network namespace, so nothing could connect (ip link set lo up)',
    ]);
  }
  let started;
  try {
    started = await startHttp(backend, h, p, observe, {
      coalesce: { ...config.coalesce, datapath: config.datapath },
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why: Record<string, string> = {
      EADDRNOTAVAIL: 'no interface here has that address (in a fresh network namespace, lo is down: ip link set lo up)',
      EADDRINUSE: 'another process listens there',
      EACCES: 'a port below 1024 needs root or CAP_NET_BIND_SERVICE',
    };
    throw new ConfigError(ErrorCode.HttpListen, `--http: cannot listen on ${config.http.listen}`, [
      `${e.code ?? 'error'}: ${why[e.code ?? ''] ?? e.message}`,
    ]);
  }
  log.info({ listen: `${h}:${started.port}` }, 'http: /status and /metrics');
  return started.server;
}

function closeOutputs(backend: VhostUserNetBackend, observe: Observers, log: Logger): void {
  observe.ringTrace?.close();
  backend.setMessageTrace(undefined)?.close();
  if (observe.capture) {
    observe.capture.close();
    log.info(
      { files: observe.capture.allFiles, frames: observe.capture.frames, lost: observe.capture.dropped },
      'capture closed',
    );
  }
}
