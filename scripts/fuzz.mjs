// Coverage-guided fuzzing of the native parsers with libFuzzer under AddressSanitizer and
// UndefinedBehaviorSanitizer (Debian clang-19, libclang-rt-19-dev; scripts/setup-host.sh).
//
//   npm run fuzz -- TARGET [SECONDS]      one target (default 60 s)
//   npm run fuzz -- all [SECONDS]         every target, one after another
//   npm run fuzz -- list                  the targets
//
// Targets are native/fuzz/fuzz_TARGET.cc. The committed seed corpus (native/fuzz/corpus/TARGET)
// is read, never written: new inputs go to build/fuzz/corpus/TARGET. A crash leaves its input in
// build/fuzz/crash-TARGET-* and fails the run; each crash found becomes a named regression test
// (test/fuzz-regressions.test.ts replays native/fuzz/regressions/TARGET/*). The last line of
// each target's run says how many executions it made, and writes build/fuzz/TARGET.json.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const src = join(root, 'native', 'fuzz');
const out = join(root, 'build', 'fuzz');
const CXX = process.env.VUN_FUZZ_CXX ?? 'clang++-19';

export const targets = () =>
  readdirSync(src)
    .filter((f) => /^fuzz_\w+\.cc$/.test(f))
    .map((f) => f.slice(5, -3))
    .sort();

/**
 * Builds build/fuzz/TARGET when its sources or a header (native/, native/fuzz/) is newer. A
 * target that drives more than headers names the native sources it links in comment lines
 * `// fuzz-sources: a.cc b.cc` (relative to native/).
 */
export function build(target) {
  mkdirSync(out, { recursive: true });
  const bin = join(out, target);
  const source = join(src, `fuzz_${target}.cc`);
  const extra = [...readFileSync(source, 'utf8').matchAll(/^\/\/ fuzz-sources:(.*)$/gm)]
    .flatMap((m) => m[1].trim().split(/\s+/))
    .map((f) => join(root, 'native', f));
  const headers = [join(root, 'native'), src].flatMap((dir) =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.h'))
      .map((f) => statSync(join(dir, f)).mtimeMs),
  );
  const newest = Math.max(statSync(source).mtimeMs, ...extra.map((f) => statSync(f).mtimeMs), ...headers);
  if (existsSync(bin) && statSync(bin).mtimeMs > newest) return bin;
  const r = spawnSync(
    CXX,
    [
      '-std=c++17',
      '-g',
      '-O1',
      '-fsanitize=fuzzer,address,undefined',
      '-fno-sanitize-recover=undefined',
      '-fno-omit-frame-pointer',
      source,
      ...extra,
      // host_port.cc's TAP port writes through io_uring.
      ...(extra.some((f) => f.endsWith('host_port.cc')) ? ['-luring'] : []),
      '-o',
      bin,
    ],
    { encoding: 'utf8' },
  );
  if (r.error || r.status !== 0) {
    throw new Error(
      `building fuzz target ${target} with ${CXX} failed: ${r.error?.message ?? r.stderr}\n(Debian: apt-get install clang-19 libclang-rt-19-dev; scripts/setup-host.sh does it)`,
    );
  }
  return bin;
}

/** Runs one target for `seconds`; returns {target, execs, crashed, output}. */
export function run(target, seconds) {
  const bin = build(target);
  const work = join(out, 'corpus', target);
  mkdirSync(work, { recursive: true });
  const seeds = join(src, 'corpus', target);
  const args = [
    `-max_total_time=${seconds}`,
    '-print_final_stats=1',
    '-timeout=10',
    '-rss_limit_mb=2048',
    `-artifact_prefix=${join(out, `crash-${target}-`)}`,
    work,
    ...(existsSync(seeds) ? [seeds] : []),
  ];
  const r = spawnSync(bin, args, {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1', UBSAN_OPTIONS: 'print_stacktrace=1' },
  });
  const output = `${r.stdout}${r.stderr}`;
  const execs = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(output)?.[1] ?? 0);
  const coverage = Number(
    /cov: (\d+)/g.exec(
      output
        .split('\n')
        .filter((l) => /cov: \d+/.test(l))
        .pop() ?? '',
    )?.[1] ?? 0,
  );
  const crashed = r.status !== 0;
  const result = { target, seconds, execs, coverage, crashed, date: new Date().toISOString() };
  writeFileSync(join(out, `${target}.json`), `${JSON.stringify(result, null, 2)}\n`);
  return { ...result, output };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [what = 'list', secs = '60'] = process.argv.slice(2);
  if (what === 'list') {
    console.log(targets().join('\n'));
  } else {
    const list = what === 'all' ? targets() : [what];
    const unknown = list.filter((t) => !targets().includes(t));
    if (unknown.length) {
      console.error(`unknown fuzz target: ${unknown.join(', ')} (targets: ${targets().join(', ')})`);
      process.exit(2);
    }
    let failed = 0;
    for (const t of list) {
      const r = run(t, Number(secs));
      if (r.crashed) {
        failed++;
        console.error(r.output.split('\n').slice(-60).join('\n'));
      }
      console.log(
        `fuzz ${t}: ${r.execs} executions in ${secs} s, coverage ${r.coverage}${r.crashed ? ', CRASHED' : ', no crash'}`,
      );
    }
    process.exit(failed ? 1 : 0);
  }
}
