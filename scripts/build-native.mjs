// Builds the addon with node-gyp against the running node's own headers: nothing is downloaded.
// Incremental: configures once, then lets make rebuild only what changed. Also the package's
// install script: installed from its tarball, without devDependencies, it takes the node-gyp
// that npm itself carries (npm_config_node_gyp, which npm sets for install scripts).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const nodedir = dirname(dirname(process.execPath));
if (!existsSync(join(nodedir, 'include', 'node', 'node_api.h'))) {
  console.error(`build-native: no Node headers under ${nodedir}/include/node (install nodejs's headers)`);
  process.exit(1);
}
function nodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    const npms = process.env.npm_config_node_gyp;
    if (npms && existsSync(npms)) return npms;
    console.error('build-native: no node-gyp (npm install --include=dev, or run this under npm)');
    process.exit(1);
  }
}
const gyp = nodeGyp();
const debug = process.env.VUN_DEBUG_NATIVE ? ['--debug'] : [];
const run = (args) =>
  spawnSync(process.execPath, [gyp, ...args, `--nodedir=${nodedir}`, ...debug], { stdio: 'inherit' }).status ?? 1;
const configured = existsSync(join('build', 'Makefile')) && existsSync(join('build', 'config.gypi'));
if (!configured || process.argv.includes('--rebuild')) {
  const rc = run(['configure']);
  if (rc !== 0) process.exit(rc);
}
process.exit(run(['build', '--jobs=2']));
