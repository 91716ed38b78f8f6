/**
 * What a backend's log says about its vrings: the `vring counters` lines it writes when a
 * session ends (one per vring), read back as frames per receiveq and per transmitq.
 */
export function loggedFrames(output: string, pairs: number): { receiveq: number[]; transmitq: number[] } {
  const out = { receiveq: Array<number>(pairs).fill(0), transmitq: Array<number>(pairs).fill(0) };
  for (const line of output.split('\n')) {
    if (!line.includes('"msg":"vring counters"')) continue;
    const c = JSON.parse(line) as { vring: number; frames: number };
    if (c.vring >> 1 < pairs) out[c.vring % 2 === 0 ? 'receiveq' : 'transmitq'][c.vring >> 1] = c.frames;
  }
  return out;
}
