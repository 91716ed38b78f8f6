/**
 * vhost-user-net command line: dispatches a parsed command (command.ts) to what runs it;
 * serving is serve.ts.
 */
import { ConfigError } from '../errors.js';
import { runDemo } from '../demo/demo.js';
import { runLab } from '../demo/lab.js';
import { formatStatus } from '../metrics/status-text.js';
import { explainFile } from '../trace/explain.js';
import { capabilities, type Command, parseCommandLine, USAGE, versionText } from './command.js';
import { conditionsCommand } from './guest-commands.js';
import { exploreCommand } from './explore-command.js';
import { serve } from './serve.js';
import { runGuest } from '../demo/guest-run.js';

export { capabilities, parseCommandLine, USAGE, version } from './command.js';

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
  return cmd.action === 'serve' ? await serve(cmd, argv) : await run(cmd);
}

/** The commands other than serving: each prints and returns its exit status. */
async function run(cmd: Exclude<Command, { action: 'serve' }>): Promise<number> {
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
  if (cmd.action === 'lab') {
    return await runLab({ datapath: cmd.datapath, packed: cmd.packed, queuePairs: cmd.queues });
  }
  if (cmd.action === 'explain') {
    // `explain FILE | head`: a reader that goes away ends the output, not with a stack trace.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
    try {
      process.stdout.write(`${explainFile(cmd.file, { vring: cmd.vring }).join('\n')}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`vhost-user-net explain: ${(err as Error).message}\n`);
      return 1;
    }
  }
  if (cmd.action === 'guest' || cmd.action === 'conditions' || cmd.action === 'explore') {
    try {
      if (cmd.action === 'explore') return await exploreCommand(cmd);
      return cmd.action === 'guest' ? await runGuest(cmd) : await conditionsCommand(cmd);
    } catch (err) {
      const e = err as Error & { code?: string };
      process.stderr.write(`vhost-user-net ${cmd.action}: ${e.message}${e.code ? `\n[${e.code}]` : ''}\n`);
      return e.code ? 2 : 1;
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
  if (cmd.action === 'help') process.stdout.write(USAGE);
  else if (cmd.action === 'version') process.stdout.write(`${versionText()}\n`);
  else process.stdout.write(`${JSON.stringify(capabilities(), null, 2)}\n`);
  return 0;
}
