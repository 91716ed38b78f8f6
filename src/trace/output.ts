/** Where a trace goes: a file (appended), `-` for stdout, or a stream the caller gives. */
import { createWriteStream, type WriteStream } from 'node:fs';

export type TraceOutput = WriteStream | NodeJS.WritableStream;

export function openTraceOutput(target: string | NodeJS.WritableStream): TraceOutput {
  if (typeof target !== 'string') return target;
  return target === '-' ? process.stdout : createWriteStream(target, { flags: 'a' });
}

/** Ends a trace file; stdout and caller streams are left open. */
export function closeTraceOutput(out: TraceOutput): void {
  if (out !== process.stdout && 'end' in out) (out as WriteStream).end();
}
