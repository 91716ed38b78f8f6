// Checks (or with --fix, applies) clang-format on native/ sources, the fuzz targets and the C
// benchmark tools.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const fix = process.argv.includes('--fix');
const files = ['native', join('native', 'fuzz'), join('bench', 'tap-io-uring')].flatMap((dir) =>
  readdirSync(dir)
    .filter((f) => /\.(cc|c|h)$/.test(f))
    .map((f) => join(dir, f)),
);
const args = fix ? ['-i', ...files] : ['--dry-run', '--Werror', ...files];
const r = spawnSync('clang-format', args, { stdio: 'inherit' });
if (r.error) {
  console.error('clang-format not found: run scripts/setup-host.sh (Debian clang-format)');
  process.exit(1);
}
process.exit(r.status ?? 1);
