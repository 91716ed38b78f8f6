// npm run bench: the benchmarks one after another (each prints one number), then the report.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { root } from './lib.mjs';

const only = process.argv.slice(2);
const all = [
  'ring-throughput',
  'tap-forwarding',
  'guest-tcp',
  'mq-scaling',
  'observe-overhead',
  'device-layer',
  'migration',
  'packed-ring',
  'tap-io-uring',
].filter((b) => !only.length || only.includes(b));
let failed = 0;
for (const b of all) {
  const r = spawnSync(process.execPath, [join(root, 'bench', `${b}.bench.mjs`)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status === 0) console.log(`${b}: ${r.stdout.trim()}`);
  else {
    failed++;
    console.log(`${b}: FAILED (exit ${r.status})`);
  }
}
spawnSync(process.execPath, [join(root, 'bench', 'report.mjs')], { stdio: 'inherit' });
process.exitCode = failed ? 1 : 0;
