/** The one logger: JSON lines (pretty when stdout is a terminal). Components take children. */
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

export function createLogger(level: LogLevel = 'info', opts: { pretty?: boolean; fd?: number } = {}): Logger {
  const fd = opts.fd ?? 1;
  const usePretty = opts.pretty ?? (fd === 1 ? process.stdout.isTTY : process.stderr.isTTY);
  const base = {
    level,
    base: { pid: process.pid },
    // Masks and addresses are logged as 0x strings by the callers; bigint must never reach JSON.
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (usePretty) return pino(base, pretty({ colorize: true, sync: true, destination: fd }));
  return pino(base, pino.destination({ fd, sync: true }));
}

/** A logger that drops everything (tests that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
