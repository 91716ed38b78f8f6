// Every run a benchmark's result has recorded: each committed version of
// bench/results/NAME.json (git log), the working copy when it is newer, and runs reported from
// elsewhere (bench/results/reported.json: figures someone measured with the same command on a
// machine this tree never ran on, each with its source). A headline is then shown as the range
// over these runs, per machine, beside what that machine charges for a TAP write: one
// machine's ratio is never the product's number.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './lib.mjs';

const git = (args) => execFileSync('git', ['-C', root, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });

/** Runs of benchmark `name`, oldest first: {date, cpu, cores, kernel, costs, source, result}. */
export function runsOf(name) {
  const path = `bench/results/${name}.json`;
  const seen = new Map();
  const add = (result, source) => {
    const m = result?.machine;
    if (!m?.date || seen.has(m.date)) return;
    seen.set(m.date, {
      date: m.date,
      cpu: m.cpu,
      cores: m.cores,
      kernel: m.kernel,
      costs: m.costs ?? null,
      source,
      result,
    });
  };
  let revs = [];
  try {
    revs = git(['log', '--format=%h', '--', path]).split('\n').filter(Boolean);
  } catch {
    // Not a git checkout (an unpacked tarball): the working copy only.
  }
  for (const rev of revs) {
    try {
      add(JSON.parse(git(['show', `${rev}:${path}`])), `commit ${rev}`);
    } catch {
      // Deleted or unreadable at that commit.
    }
  }
  const file = join(root, path);
  if (existsSync(file)) add(JSON.parse(readFileSync(file, 'utf8')), 'working copy');
  const reported = join(root, 'bench', 'results', 'reported.json');
  if (existsSync(reported))
    for (const r of JSON.parse(readFileSync(reported, 'utf8')).runs ?? [])
      if (r.benchmark === name) add(r, r.source ?? 'reported');
  return [...seen.values()].sort((a, b) => a.date.localeCompare(b.date));
}

/** A figure as {median, min, max}: a spread object, or a plain number (older results). */
export function asSpread(x) {
  if (x === undefined || x === null) return undefined;
  if (typeof x === 'number') return { median: x, min: x, max: x };
  return x.median === undefined ? undefined : x;
}

/**
 * The headlines, each a function of one run's result giving {key: spread} (a key per frame
 * size or direction): what docs/benchmarks.md shows as ranges across machines.
 */
export const headlines = {
  'tap-forwarding': {
    title:
      "TAP forwarding, ours / testpmd vhost+net_tap (per round; 'default': that tree's default write path, plain writes before 2026-12-02, io_uring until 2026-12-07, io-uring=auto since)",
    figures: (r) =>
      Object.fromEntries(
        r.cases.flatMap((c) => [
          // The tree's default at the time: plain writes before 2026-12-02, io_uring until
          // 2026-12-07, io-uring=auto since (defaultRatio).
          [`${c.frameBytes} B default`, asSpread(c.defaultRatio ?? c.ratio)],
          [`${c.frameBytes} B io_uring`, c.plainRatio ? asSpread(c.ratio) : undefined],
          [`${c.frameBytes} B io-uring=off`, asSpread(c.plainRatio)],
          [`${c.frameBytes} B io-uring=auto`, asSpread(c.autoRatio)],
        ]),
      ),
    ceilings: (r) => Object.fromEntries(r.cases.map((c) => [`${c.frameBytes} B`, asSpread(c.ceiling)])),
  },
  'ring-throughput': {
    title: 'VM-free split rings, ours / DPDK vhost (per round)',
    figures: (r) => Object.fromEntries(r.cases.map((c) => [`${c.direction} ${c.frameBytes} B`, asSpread(c.ratio)])),
  },
  'packed-ring': {
    title: 'VM-free packed rings, ours / DPDK vhost packed (per round)',
    figures: (r) =>
      Object.fromEntries(r.cases.map((c) => [`${c.direction} ${c.frameBytes} B`, asSpread(c.packedVsDpdk)])),
  },
};
