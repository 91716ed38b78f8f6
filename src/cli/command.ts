/**
 * The command line's words: usage, version, capabilities, and argv parsed into a command (a
 * validated Config to serve, or another action). Follows the vhost-user "Backend program
 * conventions" (--socket-path, --fd, --print-capabilities) and adds our own options.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Config, parseConfig, readConfigFile } from '../config/config.js';
import { ConfigError, ErrorCode } from '../errors.js';
import { featureNames, ProtocolFeature, VirtioFeature } from '../features.js';
import { packageRoot } from '../native.js';
import { flagHelp, mergeFlags, parseArgsOptions } from './flags.js';
import { type ConditionsCommand, GUEST_USAGE, type GuestCommand, parseGuestCommand } from './guest-commands.js';
import { EXPLORE_USAGE, type ExploreCommand, parseExploreCommand } from './explore-command.js';
import { systemdListenFd } from '../service/systemd.js';
import { OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES } from '../vhost-user/session.js';

export const USAGE = `Usage: vhost-user-net [serve] [options]
       vhost-user-net demo [--datapath native|ts]   (as root: a Linux guest on the backend)
       vhost-user-net lab [--datapath ts|native] [--packed] [--queues N]
                                                  (a live guest to watch: traces, capture, ring page;
                                                   docs/learn-virtio.md)
       vhost-user-net explain TRACE-FILE [--vring N] (a --trace-messages or --trace-rings file as a
                                                   timeline, each step with its spec section)
       vhost-user-net status [--http HOST:PORT]     (a running backend's state, from its --http)
${GUEST_USAGE}
${EXPLORE_USAGE}

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

/**
 * vhost-user.rst "Backend program conventions": --print-capabilities prints the backend's
 * capabilities as QEMU's docs/interop/vhost-user.json defines them. For a `net` backend that is
 * the type alone (VHostUserBackendCapabilities has members only for `input` and `gpu`).
 */
export function capabilities(): Record<string, unknown> {
  return { type: 'net' };
}

/** `--version`: the version, then what this build offers a front-end (by name). */
export function versionText(): string {
  return [
    `vhost-user-net ${version()}`,
    `virtio features offered: ${featureNames(OFFERED_FEATURES, VirtioFeature).join(' ')}`,
    `protocol features offered: ${featureNames(OFFERED_PROTOCOL_FEATURES, ProtocolFeature).join(' ')}`,
  ].join('\n');
}

/** What the command line asks for. */
export type Command =
  | { action: 'help' | 'version' | 'capabilities' }
  | { action: 'demo'; datapath: 'native' | 'ts' }
  | { action: 'explain'; file: string; vring?: number | undefined }
  | { action: 'lab'; datapath: 'native' | 'ts'; packed: boolean; queues: number }
  | { action: 'status'; http: string }
  | GuestCommand
  | ConditionsCommand
  | ExploreCommand
  | ServeCommand;
export interface ServeCommand {
  action: 'serve';
  config: Config;
  faultsFile?: string | undefined;
}

/** `lab [--datapath ts|native] [--packed] [--queues N]`: a live guest with every observer on. */
function parseLabCommand(argv: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv.slice(1),
      allowPositionals: false,
      strict: true,
      options: { datapath: { type: 'string' }, packed: { type: 'boolean' }, queues: { type: 'string' } },
    });
  } catch (err) {
    throw new ConfigError(ErrorCode.Usage, `lab: ${(err as Error).message}`);
  }
  const v = parsed.values;
  const dp = v.datapath ?? 'ts';
  if (dp !== 'native' && dp !== 'ts')
    throw new ConfigError(ErrorCode.Usage, `lab: --datapath takes ts or native, not '${dp}'`);
  const queues = Number(v.queues ?? 1);
  if (!(Number.isInteger(queues) && queues >= 1 && queues <= 8)) {
    throw new ConfigError(ErrorCode.Usage, `lab: --queues takes 1 to 8, not '${v.queues}'`);
  }
  return { action: 'lab', datapath: dp, packed: v.packed === true, queues };
}

/** `explain FILE [--vring N]`: a message trace or a ring trace as a timeline. */
function parseExplainCommand(argv: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv.slice(1),
      allowPositionals: true,
      strict: true,
      options: { vring: { type: 'string' } },
    });
  } catch (err) {
    throw new ConfigError(ErrorCode.Usage, `explain: ${(err as Error).message}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new ConfigError(ErrorCode.Usage, 'explain takes one trace file');
  const vring = values.vring === undefined ? undefined : Number(values.vring);
  if (vring !== undefined && !(Number.isInteger(vring) && vring >= 0 && vring < 0x10000)) {
    throw new ConfigError(ErrorCode.Usage, `explain: --vring takes a vring index, not '${values.vring}'`);
  }
  return { action: 'explain', file: positionals[0] as string, vring };
}

/** Parses argv into a validated Config (or a request for help/version/capabilities). */
export function parseCommandLine(argv: string[]): Command {
  // "Other options and arguments should be ignored" with --print-capabilities (vhost-user.rst
  // "Backend program conventions"): it wins over anything next to it, valid or not.
  const own = argv.indexOf('--') < 0 ? argv : argv.slice(0, argv.indexOf('--'));
  if (own.includes('--print-capabilities')) return { action: 'capabilities' };
  if (argv[0] === 'guest' || argv[0] === 'conditions') return parseGuestCommand(argv);
  if (argv[0] === 'explore') return parseExploreCommand(argv);
  if (argv[0] === 'explain') return parseExplainCommand(argv);
  if (argv[0] === 'lab') return parseLabCommand(argv);
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
