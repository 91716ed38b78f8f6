// Writes docs/fault-conditions.md from the catalog (src/conditions/catalog.ts, built to dist/).
// test/conditions.test.ts fails when the file and the catalog differ.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { conditionsMarkdown } = await import(join(root, 'dist', 'conditions', 'catalog-doc.js'));
writeFileSync(join(root, 'docs', 'fault-conditions.md'), conditionsMarkdown());
console.log('docs/fault-conditions.md written');
