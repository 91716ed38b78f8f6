// Lists functions longer than a limit (default 90 lines), in TypeScript (by the compiler's own
// parse) and in C++ (a function body: a line ending in `{` at the outermost brace level, up to
// its matching `}`, strings and comments skipped). Exits 1 when a function under one of the
// paths given is over the limit. `npm run lint` runs it over the rooms already kept short.
//   node scripts/function-lengths.mjs [--max N] PATH...
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

const args = process.argv.slice(2);
let max = 90;
const paths = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--max') max = Number(args[++i]);
  else paths.push(args[i]);
}

function files(p) {
  if (statSync(p).isDirectory()) return readdirSync(p).flatMap((n) => files(join(p, n)));
  return /\.(ts|cc|h)$/.test(p) && !p.endsWith('.d.ts') && !p.endsWith('.test.ts') ? [p] : [];
}

function tsFunctions(file) {
  const text = readFileSync(file, 'utf8');
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out = [];
  const visit = (node) => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const a = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
      const b = sf.getLineAndCharacterOfPosition(node.end).line + 1;
      const name = node.name ? node.name.getText(sf) : '(anonymous)';
      out.push({ name, from: a, lines: b - a + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

// Strips comments and string/char literals so braces inside them do not count.
function code(line, state) {
  let out = '';
  for (let i = 0; i < line.length; i++) {
    if (state.block) {
      if (line.startsWith('*/', i)) {
        state.block = false;
        i++;
      }
      continue;
    }
    if (line.startsWith('//', i)) break;
    if (line.startsWith('/*', i)) {
      state.block = true;
      i++;
      continue;
    }
    const c = line[i];
    if (c === '"' || c === "'") {
      for (i++; i < line.length && line[i] !== c; i++) if (line[i] === '\\') i++;
      continue;
    }
    out += c;
  }
  return out;
}

function cxxFunctions(file) {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out = [];
  const state = { block: false };
  let depth = 0;
  let open; // { name, from, depth }
  const opens = [];
  for (let n = 0; n < lines.length; n++) {
    const c = code(lines[n], state);
    for (const ch of c) {
      if (ch === '{') {
        // A function body: `...) {`, `...) const {`, `...) override {` etc., not a namespace,
        // class, struct, enum or initializer list.
        const head = c.slice(0, c.lastIndexOf('{')).trim();
        const isFn =
          /\)\s*(const|override|noexcept|final|\s)*$/.test(head) &&
          !/^(if|for|while|switch|catch)\b/.test(head) &&
          !/\b(if|for|while|switch|catch)\s*\(/.test(head);
        opens.push(isFn && !open ? { name: head.replace(/\(.*$/, '').split(/\s+/).pop(), from: n + 1, depth } : null);
        if (isFn && !open) open = opens[opens.length - 1];
        depth++;
      } else if (ch === '}') {
        depth--;
        const o = opens.pop();
        if (o && o === open) {
          out.push({ name: o.name, from: o.from, lines: n + 1 - o.from + 1 });
          open = undefined;
        }
      }
    }
  }
  return out;
}

let over = 0;
for (const p of paths)
  for (const f of files(p)) {
    const fns = f.endsWith('.ts') ? tsFunctions(f) : cxxFunctions(f);
    for (const fn of fns)
      if (fn.lines > max) {
        over++;
        console.log(`${f}:${fn.from} ${fn.name}: ${fn.lines} lines (limit ${max})`);
      }
  }
if (over) console.log(`${over} function(s) over ${max} lines`);
process.exit(over ? 1 : 0);
