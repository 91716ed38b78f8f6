/**
 * External programs we start (QEMU, dpdk-testpmd, the backend in a namespace): output kept,
 * stopped by their own pid. A missing tool is a loud error naming its Debian package.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

export function requireCommand(cmd: string, debianPackage: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  const path = r.stdout.trim();
  if (r.status !== 0 || !path) {
    throw new Error(
      `${cmd} not found: this test needs Debian's ${debianPackage}. Run 'bash scripts/setup-host.sh' as root (npm test does) or 'apt-get install ${debianPackage}'.`,
    );
  }
  return path;
}

export class Proc {
  readonly child: ChildProcess;
  output = '';
  exitCode: number | null | undefined;
  readonly exited: Promise<number | null>;

  constructor(
    cmd: string,
    args: string[],
    opts: {
      env?: NodeJS.ProcessEnv;
      cwd?: string;
      /** Its stdin a pipe (`write`) instead of nothing. */ input?: boolean;
    } = {},
  ) {
    this.child = spawn(cmd, args, {
      stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    // A write after the process exited must not take the caller down with EPIPE.
    this.child.stdin?.on('error', () => undefined);
    const add = (d: Buffer) => {
      this.output += d.toString();
      if (this.output.length > 4_000_000) this.output = this.output.slice(-2_000_000);
    };
    this.child.stdout?.on('data', add);
    this.child.stderr?.on('data', add);
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(this.exitCode);
      }),
    );
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** Sends `signal` to this process (by its pid) and waits for it, then SIGKILL. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null;
    // Through the child's handle: a process that exited and was reaped before its 'exit' event
    // ran is not signalled (process.kill would throw ESRCH, or reach a reused pid).
    this.child.kill(signal);
    const t = setTimeout(() => {
      if (this.running) this.child.kill('SIGKILL');
    }, graceMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  /** Writes to its stdin (started with `input`); false when that is gone. */
  write(text: string): boolean {
    const w = this.child.stdin;
    if (!w || w.destroyed || !this.running) return false;
    w.write(text);
    return true;
  }

  tail(n = 40): string {
    return this.output.split('\n').slice(-n).join('\n');
  }
}
