// Builds the addon with AddressSanitizer and UndefinedBehaviorSanitizer (clang-19, Debian
// libclang-rt-19-dev) into build/asan/vhost_user_net.node, for `npm run test:asan`. Same sources
// and defines as binding.gyp; rebuilt when a native source or header is newer than the addon.
// The sanitizer runtime is shared (-shared-libsan): node is not instrumented, so the run
// preloads it (scripts/test-asan.sh).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const CXX = process.env.VUN_ASAN_CXX ?? 'clang++-19';
const out = join(root, 'build', 'asan');
const addon = join(out, 'vhost_user_net.node');
const target = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8')).targets[0];
const sources = target.sources.map((s) => join(root, s));
const require = createRequire(import.meta.url);
const nodeInclude = join(dirname(dirname(process.execPath)), 'include', 'node');
const napiInclude = join(root, require('node-addon-api').include_dir);

const native = join(root, 'native');
const newest = Math.max(
  ...readdirSync(native)
    .filter((f) => /\.(cc|h)$/.test(f))
    .map((f) => statSync(join(native, f)).mtimeMs),
  statSync(join(root, 'binding.gyp')).mtimeMs,
);
if (existsSync(addon) && statSync(addon).mtimeMs > newest && !process.argv.includes('--rebuild')) {
  console.log(`build-asan: ${addon} is up to date`);
  process.exit(0);
}
mkdirSync(out, { recursive: true });
const flags = [
  '-std=gnu++17',
  '-O1',
  '-g',
  '-fno-omit-frame-pointer',
  '-fPIC',
  '-fsanitize=address,undefined',
  '-fno-sanitize-recover=all',
  '-shared-libsan',
  '-Wall',
  '-Wno-unused-parameter',
  ...target.defines.map((d) => `-D${d}`),
  '-DVUN_SANITIZED="address,undefined"',
  `-I${nodeInclude}`,
  `-I${napiInclude}`,
];
// One object per source, two compilers at a time (this machine has 2 cores).
const objects = sources.map((s) => join(out, `${s.split('/').pop().replace(/\.cc$/, '')}.o`));
const { spawn } = await import('node:child_process');
const compile = (i) =>
  new Promise((resolve, reject) => {
    const p = spawn(CXX, [...flags, '-c', sources[i], '-o', objects[i]], { stdio: 'inherit' });
    p.on('error', (e) =>
      reject(new Error(`${CXX}: ${e.message} (Debian: apt-get install clang-19 libclang-rt-19-dev)`)),
    );
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${CXX} failed on ${sources[i]}`))));
  });
let next = 0;
const worker = async () => {
  while (next < sources.length) await compile(next++);
};
try {
  await Promise.all([worker(), worker()]);
} catch (e) {
  console.error(`build-asan: ${e.message}`);
  process.exit(1);
}
const link = spawnSync(CXX, [...flags, '-shared', ...objects, ...(target.libraries ?? []), '-o', addon], {
  stdio: 'inherit',
});
if (link.status !== 0) process.exit(link.status ?? 1);
console.log(`build-asan: built ${addon}`);
