// Builds the addon with node-gyp against the running node's own headers: nothing is downloaded.
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
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const args = [gyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=2'];
if (process.env.VUN_DEBUG_NATIVE) args.push('--debug');
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
