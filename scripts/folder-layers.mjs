// Folder-level imports in src/: which folder imports which (type imports included), and every
// pair of folders that import each other (a two-way import). Exits 1 on a two-way import.
// A file directly in src/ (api.ts, backend.ts, errors.ts, ...) counts as a folder of its own.
//   node scripts/folder-layers.mjs [src] [--list]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve(process.argv.slice(2).find((a) => !a.startsWith('--')) ?? 'src');
const list = process.argv.includes('--list');
const files = [];
(function walk(d) {
  for (const n of readdirSync(d)) {
    const p = join(d, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.ts$/.test(n) && !/\.d\.ts$/.test(n) && !/\.test\.ts$/.test(n)) files.push(p);
  }
})(root);
const folder = (p) => {
  const parts = relative(root, p).split('/');
  return parts.length > 1 ? parts[0] : parts[0].replace(/\.js$/, '.ts');
};
const edges = new Map(); // "a -> b" -> example file
for (const f of files) {
  for (const m of readFileSync(f, 'utf8').matchAll(/(?:import|export)[^'"]*?from\s+['"](\.[^'"]+)['"]/g)) {
    const target = resolve(dirname(f), m[1]);
    const a = folder(f);
    const b = folder(target);
    if (a !== b && !edges.has(`${a} -> ${b}`)) edges.set(`${a} -> ${b}`, relative(root, f));
  }
}
if (list) for (const [e, f] of [...edges].sort()) console.log(`${e}  (${f})`);
const twoWay = [];
for (const e of edges.keys()) {
  const [a, b] = e.split(' -> ');
  if (a < b && edges.has(`${b} -> ${a}`))
    twoWay.push(`${a} <-> ${b}: ${edges.get(e)} imports ${b}/, ${edges.get(`${b} -> ${a}`)} imports ${a}/`);
}
for (const t of twoWay) console.log(`two-way: ${t}`);
console.log(`${files.length} files, ${edges.size} folder imports, ${twoWay.length} two-way`);
process.exit(twoWay.length ? 1 : 0);
