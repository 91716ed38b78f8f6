/**
 * Running under systemd: socket activation (the listening socket comes from systemd,
 * sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, fds from 3 on) and readiness and
 * watchdog notifications (sd_notify(3): datagrams to NOTIFY_SOCKET). Without systemd's
 * variables nothing here does anything. contrib/systemd/ has the units.
 */
import type { NativeBinding } from '../native.js';

const SD_LISTEN_FDS_START = 3;

/**
 * The listening socket systemd passed, when it passed one to this process: the fd named
 * `vhost-user` (FileDescriptorName=), else the first. The variables are removed, as
 * sd_listen_fds(1) does, so programs we start do not take them for their own.
 */
export function systemdListenFd(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | undefined {
  const count = Number(env.LISTEN_FDS ?? 0);
  const forUs = env.LISTEN_PID !== undefined && Number(env.LISTEN_PID) === pid;
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (!forUs || !Number.isInteger(count) || count < 1) return undefined;
  const named = names.indexOf('vhost-user');
  return SD_LISTEN_FDS_START + (named >= 0 && named < count ? named : 0);
}

/** sd_notify: READY=1 once serving, WATCHDOG=1 pings when systemd's watchdog is on, STOPPING=1. */
export class Notifier {
  private readonly socket: string | undefined;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    private readonly native: NativeBinding,
    private readonly env: NodeJS.ProcessEnv = process.env,
    /** Told when a notification cannot be sent (systemd then times the service out). */
    private readonly onError: (err: Error) => void = () => {},
  ) {
    this.socket = env.NOTIFY_SOCKET || undefined;
  }

  /** Whether systemd (or a test) listens for notifications. */
  get active(): boolean {
    return this.socket !== undefined;
  }

  private send(state: string): void {
    if (!this.socket) return;
    try {
      this.native.datagramSend(this.socket, Buffer.from(state));
    } catch (err) {
      this.onError(err as Error);
    }
  }

  /** Serving: READY=1 with a status line; starts the watchdog pings when WATCHDOG_USEC asks. */
  ready(status: string): void {
    this.send(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
    const usec = Number(this.env.WATCHDOG_USEC ?? 0);
    const pidOk = this.env.WATCHDOG_PID === undefined || Number(this.env.WATCHDOG_PID) === process.pid;
    if (usec > 0 && pidOk && !this.watchdog) {
      // sd_watchdog_enabled(3): ping at half the interval.
      this.watchdog = setInterval(() => this.send('WATCHDOG=1'), Math.max(1, Math.floor(usec / 2000)));
      this.watchdog.unref();
    }
  }

  stopping(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
    this.send('STOPPING=1');
  }
}
