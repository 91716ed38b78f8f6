/**
 * docs/faults.md's example is test/examples/faults-api.test.ts, word for word (the suite runs
 * the file), and the package's entry points resolve as a user's import would (Node, through
 * package.json "exports").
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../src/native.js';

describe('the programmatic API as documented', () => {
  it('docs/faults.md shows the example test that the suite runs, unchanged', () => {
    const doc = readFileSync(join(packageRoot, 'docs', 'faults.md'), 'utf8');
    const file = readFileSync(join(packageRoot, 'test', 'examples', 'faults-api.test.ts'), 'utf8');
    const block = /## The programmatic API[\s\S]*?```ts\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(block).toBe(file);
  });

  it('"vhost-user-net" and "vhost-user-net/guest" resolve through package.json exports', () => {
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const a = await import('vhost-user-net'); const g = await import('vhost-user-net/guest'); console.log(typeof a.startBackend, typeof a.compilePlan, typeof g.bootGuest);",
      ],
      { cwd: packageRoot, encoding: 'utf8' },
    );
    expect(out.trim()).toBe('function function function');
  });
});
