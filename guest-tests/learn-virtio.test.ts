/**
 * docs/learn-virtio.md, run as a learner would, command by command: each ```sh block's commands
 * in order in bash from the checkout, each must succeed, and a trailing `# expect: TEXT` must
 * be in its output. A ```sh lab block starts the lab (stopping the one before, as Ctrl-C
 * would) and waits until it says it is ready; ```sh interactive blocks are checked to name an
 * installed program. At the end the lab is stopped with SIGINT and must leave nothing behind.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LAB } from '../src/demo/lab.js';
import { packageRoot } from '../src/native.js';
import { Proc } from '../src/util/proc.js';
import { waitFor } from '../src/util/wait.js';

interface Block {
  kind: 'sh' | 'lab' | 'interactive';
  commands: { line: string; expect?: string }[];
}

/** The page's shell blocks: commands with `\` continuations joined, comments kept apart. */
export function shellBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  for (const m of markdown.matchAll(/^```sh( lab| interactive)?\n([\s\S]*?)^```$/gm)) {
    const kind = m[1] === ' lab' ? 'lab' : m[1] === ' interactive' ? 'interactive' : 'sh';
    const joined = (m[2] as string).replace(/\\\n\s*/g, ' ');
    const commands = joined
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => {
        const e = /\s+# expect: (.+)$/.exec(l);
        return e ? { line: l.slice(0, e.index), expect: e[1] as string } : { line: l };
      });
    blocks.push({ kind, commands });
  }
  return blocks;
}

const page = readFileSync(join(packageRoot, 'docs', 'learn-virtio.md'), 'utf8');
let lab: Proc | undefined;

async function stopLab(): Promise<void> {
  if (!lab) return;
  const l = lab;
  lab = undefined;
  l.child.kill('SIGINT');
  const code = await Promise.race([l.exited, new Promise((r) => setTimeout(() => r('timeout'), 60_000))]);
  expect(code, `the lab on Ctrl-C:\n${l.tail(20)}`).toBe(0);
  expect(spawnSync('ip', ['netns', 'pids', LAB.netns]).status, 'the namespace is gone').not.toBe(0);
}

afterAll(async () => {
  if (lab) {
    lab.child.kill('SIGINT');
    await lab.exited;
  }
});

describe('docs/learn-virtio.md, command by command', () => {
  it('the page has commands only, nothing to fill in', () => {
    const blocks = shellBlocks(page);
    expect(blocks.filter((b) => b.kind === 'lab').length).toBeGreaterThanOrEqual(2);
    expect(blocks.flatMap((b) => b.commands).length).toBeGreaterThan(15);
    for (const b of blocks)
      for (const c of b.commands) expect(c.line).not.toMatch(/\.\.\.|<[A-Z-]+>|\bFILE\b|\bPORT\b/);
  });

  it('runs every command as written, against a live lab', async () => {
    const ran: string[] = [];
    for (const block of shellBlocks(page)) {
      if (block.kind === 'interactive') {
        for (const c of block.commands) {
          const prog = c.line.split(/\s+/)[0] as string;
          expect(spawnSync('sh', ['-c', `command -v ${prog}`]).status, `${prog} is installed`).toBe(0);
        }
        continue;
      }
      if (block.kind === 'lab') {
        await stopLab();
        const cmd = block.commands[0]?.line as string;
        const started = new Proc('bash', ['-c', `exec ${cmd}`], { cwd: packageRoot });
        lab = started;
        await waitFor(
          () => started.output.includes('VUN-LAB ready') || !started.running,
          240_000,
          `${cmd} to be ready`,
        );
        expect(started.output, `${cmd}:\n${started.tail(30)}`).toContain('VUN-LAB ready');
        // What the lab prints is what the page says: the ring page's URL and the commands.
        for (const said of [
          'http://127.0.0.1:9180/rings.html',
          'ip netns exec vun-lab iperf3 -c 10.77.0.2 -t 3 -R',
          'socat -,raw,echo=0,escape=0x1d UNIX-CONNECT:/tmp/vun-lab/shell.sock',
        ]) {
          expect(started.output).toContain(said);
          expect(page).toContain(said);
        }
        ran.push(cmd);
        continue;
      }
      for (const c of block.commands) {
        const r = spawnSync('bash', ['-c', c.line], { cwd: packageRoot, encoding: 'utf8', timeout: 120_000 });
        const out = `${r.stdout}${r.stderr}`;
        expect(r.status, `${c.line}\n${out.slice(-2000)}\nlab:\n${lab?.tail(10)}`).toBe(0);
        if (c.expect) expect(out, `${c.line}: expected '${c.expect}' in\n${out.slice(-2000)}`).toContain(c.expect);
        ran.push(c.line);
      }
    }
    await stopLab();
    console.log(`learn-virtio.md: ${ran.length} commands ran`);
  }, 900_000);
});
