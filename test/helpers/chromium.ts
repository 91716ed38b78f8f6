/** Headless Chromium (Debian's `chromium`), for the tests that render the ring page. */
import { execFile } from 'node:child_process';

const CHROMIUM = '/usr/bin/chromium';

/**
 * Headless Chromium with the flags this machine needs (no sandbox as root, no network chatter).
 * Asynchronous: the HTTP endpoint it loads runs in this process's event loop.
 */
export function chromium(profile: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      CHROMIUM,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${profile}`,
        '--window-size=1280,900',
        '--virtual-time-budget=3000',
        ...args,
      ],
      // Without the ASan runtime the ASan phase preloads into node (Chromium is not ours).
      { encoding: 'utf8', timeout: 60_000, maxBuffer: 16 << 20, env: { ...process.env, LD_PRELOAD: '' } },
      (err, stdout, stderr) => (err ? reject(new Error(`chromium: ${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
}
