/** Where a trace goes: a file (appended), `-` for stdout, or a stream the caller gives. */
import { createWriteStream, openSync, type WriteStream } from 'node:fs';
import { ErrorCode, HostIoError } from '../errors.js';

export type TraceOutput = WriteStream | NodeJS.WritableStream;

/** Opens `path` now (so a bad path stops start-up with a coded error, not later). */
export function openOutputFile(path: string, flags: 'a' | 'w'): number {
  try {
    return openSync(path, flags);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new HostIoError(ErrorCode.OutputFile, `cannot open ${path} for writing`, e.code ?? 'EIO', 'open', {
      path,
    });
  }
}

export function openTraceOutput(target: string | NodeJS.WritableStream): TraceOutput {
  if (typeof target !== 'string') return target;
  if (target === '-') return process.stdout;
  const out = createWriteStream('', { fd: openOutputFile(target, 'a') });
  // A write that fails later (disk full) ends this trace, not the device.
  out.once('error', (err) => {
    process.stderr.write(`vhost-user-net: trace ${target} stopped: ${err.message} [${ErrorCode.OutputFile}]\n`);
  });
  return out;
}

/** Ends a trace file; stdout and caller streams are left open. */
export function closeTraceOutput(out: TraceOutput): void {
  if (out !== process.stdout && 'end' in out) (out as WriteStream).end();
}
