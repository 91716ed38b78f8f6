/** Headless Chromium (Debian's `chromium`), for the tests that render the ring page. */
import { execFile } from 'node:child_process';

const CHROMIUM = '/usr/bin/chromium';

/** The flags this machine needs: headless, no sandbox as root, no network chatter. */
const HEADLESS = (profile: string) => [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  `--user-data-dir=${profile}`,
];

/**
 * Headless Chromium with the flags this machine needs (no sandbox as root, no network chatter).
 * Asynchronous: the HTTP endpoint it loads runs in this process's event loop.
 */
export function chromium(profile: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      CHROMIUM,
      [...HEADLESS(profile), '--window-size=1280,900', '--virtual-time-budget=3000', ...args],
      // Without the ASan runtime the ASan phase preloads into node (Chromium is not ours).
      { encoding: 'utf8', timeout: 60_000, maxBuffer: 16 << 20, env: { ...process.env, LD_PRELOAD: '' } },
      (err, stdout, stderr) => (err ? reject(new Error(`chromium: ${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
}

/** A page in headless Chromium driven over the DevTools protocol: evaluate, click, read the DOM. */
export interface Page {
  /** Evaluates an expression in the page (awaiting a promise); returns its value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Waits until `expression` is truthy in the page. */
  waitFor(expression: string, timeoutMs?: number, what?: string): Promise<void>;
  /** A PNG of the viewport. */
  screenshot(): Promise<Buffer>;
  close(): Promise<void>;
}

export async function chromiumPage(profile: string, url: string): Promise<Page> {
  const { spawn } = await import('node:child_process');
  const { WebSocket } = await import('undici');
  const child = spawn(CHROMIUM, [...HEADLESS(profile), '--window-size=1280,1400', '--remote-debugging-port=0', url], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LD_PRELOAD: '' },
  });
  let stderr = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chromium: no DevTools port in 30 s\n${stderr}`)), 30_000);
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => reject(new Error(`chromium exited (${code})\n${stderr}`)));
  });
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
    type: string;
    webSocketDebuggerUrl: string;
  }[];
  const target = targets.find((t) => t.type === 'page');
  if (!target) throw new Error('chromium: no page target');
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let id = 0;
  const waiting = new Map<number, (m: { result?: unknown; error?: { message: string } }) => void>();
  ws.onmessage = (ev: { data: unknown }) => {
    const m = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
    if (m.id !== undefined) waiting.get(m.id)?.(m);
  };
  const send = (method: string, params: Record<string, unknown>) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const n = ++id;
      waiting.set(n, (m) => {
        waiting.delete(n);
        if (m.error) reject(new Error(`${method}: ${m.error.message}`));
        else resolve(m.result as Record<string, unknown>);
      });
      ws.send(JSON.stringify({ id: n, method, params }));
    });
  const evaluate = async <T>(expression: string): Promise<T> => {
    const r = (await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true })) as {
      result: { value: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (r.exceptionDetails)
      throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value;
  };
  return {
    evaluate,
    async waitFor(expression, timeoutMs = 15_000, what = expression) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        if (await evaluate<boolean>(`!!(${expression})`).catch(() => false)) return;
        if (Date.now() > end) throw new Error(`page: timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async screenshot() {
      const r = (await send('Page.captureScreenshot', { format: 'png' })) as { data: string };
      return Buffer.from(r.data, 'base64');
    },
    async close() {
      ws.close();
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      // Its helper processes leave the profile a moment after the browser.
      await new Promise((r) => setTimeout(r, 300));
    },
  };
}
