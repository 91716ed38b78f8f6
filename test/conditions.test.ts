/**
 * The conditions product without a guest: the oracles (console lines and counters into
 * signatures), the outcome a kernel and ring are held to, the command line, the kernel checks
 * (a bzImage's release, the options a virtio-net guest needs), the report formats, and the
 * generated docs/fault-conditions.md against the catalog.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { conditionsMarkdown } from '../src/conditions/catalog-doc.js';
import { conditionByRow, CONDITIONS, forbidden, outcomeFor } from '../src/conditions/catalog.js';
import { toJson, toJunit, toMarkdown } from '../src/conditions/report.js';
import { matrixCells, type ConditionResult, type ConditionsReport } from '../src/conditions/runner.js';
import { classify, parseCounters, SIGNATURES } from '../src/conditions/signatures.js';
import { parseCommandLine } from '../src/cli/command.js';
import { parseRows } from '../src/cli/guest-commands.js';
import { bzImageRelease, kernelReport, missingOptions, resolveKernel } from '../src/guest/kernels.js';
import { packageRoot } from '../src/native.js';
import { tempDir } from './helpers/harness.js';

// Console lines as the 6.1 and 6.12 guests printed them (loglevel 5, serial console).
const LOCKUP_61 = `[   12.301] virtio_net virtio0: output.0:id 256 out of range
[   21.002] watchdog: BUG: soft lockup - CPU#0 stuck for 8s! [swapper/0:0]
[   21.003] RIP: 0010:virtnet_poll+0x1a0/0x4c0 [virtio_net]`;
const FAILURE_612 = `[   10.1] virtio_net virtio0: output.0:id 256 out of range
[   10.2] net eth0: Unexpected TXQ (0) queue failure: -5`;

describe('oracles', () => {
  it('reads each console signature from its line, and a soft lockup is not a kernel BUG', () => {
    const c = classify(LOCKUP_61);
    expect(c.signatures).toEqual(['soft-lockup', 'bad-ring']);
    expect(c.evidence['bad-ring']).toBe('virtio_net virtio0: output.0:id 256 out of range');
    expect(classify(FAILURE_612).signatures).toEqual(['bad-ring', 'queue-failure']);
    const all = classify(`[1] Oops: 0000 [#1] SMP
[2] kernel BUG at drivers/virtio/virtio_ring.c:123!
[3] WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 foo
[4] INFO: task ip:55 blocked for more than 10 seconds.
[5] NETDEV WATCHDOG: eth0 (virtio_net): transmit queue 0 timed out 5120 ms
[6] irq 11: nobody cared (try booting with the "irqpoll" option)`);
    expect(all.signatures).toEqual(['oops', 'kernel-bug', 'warning', 'hung-task', 'tx-timeout', 'irq-nobody-cared']);
    expect(classify('[1] virtio_net virtio0: input.0:id 3 is not a head!\n[2] all quiet').signatures).toEqual([
      'bad-ring',
    ]);
    expect(classify('VUN-RESULT clean 0\nnothing happened').signatures).toEqual([]);
  });

  it('reads counter signatures from the deltas, and link-dead only when the guest said so', () => {
    const before = parseCounters('len=0 frame=0 csum=3 carrier=2');
    expect(before).toEqual({ len: 0, frame: 0, csum: 3, carrier: 2 });
    const after = parseCounters('len=2 frame=1 csum=7 carrier=4');
    expect(classify('', before, after, true).signatures).toEqual([
      'length-error',
      'frame-error',
      'csum-error',
      'carrier-flap',
    ]);
    expect(classify('', before, before, false).signatures).toEqual(['link-dead']);
    // One carrier change is the link coming up, not a flap; no word from the guest, no link-dead.
    expect(classify('', before, { ...before!, carrier: 3 }, undefined).signatures).toEqual([]);
    expect(parseCounters('garbage')).toBeUndefined();
  });

  it('has the documented vocabulary, each word in docs/faults.md', () => {
    const doc = readFileSync(join(packageRoot, 'docs', 'faults.md'), 'utf8');
    for (const s of SIGNATURES) expect(doc, s).toContain(`| \`${s}\` |`);
    expect(SIGNATURES).toHaveLength(14);
  });
});

describe('outcomes', () => {
  it('holds 6.1 to the lockup finding on rows 2 and 4, and other kernels to the reference', () => {
    const row2 = conditionByRow(2)!;
    expect(outcomeFor(row2, '6.1.0-57-cloud-amd64', 'split')).toMatchObject({ verdict: 'finding', hangs: true });
    expect(outcomeFor(row2, '6.1.0-57-cloud-amd64', 'packed')).toMatchObject({ verdict: 'finding' });
    // 6.12 is not 6.1 (a prefix match would say it is).
    expect(outcomeFor(row2, '6.12.118+deb12-cloud-amd64', 'split').verdict).toBe('expected');
    expect(outcomeFor(row2, '6.19.0-rc1', 'split')).toBe(row2.expect);
    expect(forbidden(row2.expect)).toContain('soft-lockup');
    expect(forbidden(outcomeFor(row2, '6.1.0', 'split'))).not.toContain('soft-lockup');
  });

  it('lets a racing reaction be one of several (row 27 on 6.1), and holds a hang to its frame (rows 26, 27)', () => {
    const row27 = conditionByRow(27)!;
    const on61 = outcomeFor(row27, '6.1.0-57-cloud-amd64', 'split');
    expect(on61.anyOf).toEqual(['soft-lockup', 'bad-ring']);
    expect(forbidden(on61)).not.toContain('soft-lockup');
    expect(forbidden(on61)).toContain('oops');
    expect(outcomeFor(row27, '6.12.118+deb12-cloud-amd64', 'split')).toMatchObject({
      frame: 'detach_buf_split',
      anyOf: ['soft-lockup', 'bad-ring'],
    });
    expect(outcomeFor(conditionByRow(26)!, '6.1.0-57-cloud-amd64', 'split')).toMatchObject({ frame: 'start_xmit' });
  });

  it('numbers the conditions 1..N with a plan, a script and at least one ring each', () => {
    expect(CONDITIONS.map((c) => c.row)).toEqual(CONDITIONS.map((_, i) => i + 1));
    for (const c of CONDITIONS) {
      expect(c.rings.length, `row ${c.row}`).toBeGreaterThan(0);
      expect(c.script, `row ${c.row}`).toMatch(/res /);
    }
  });

  it('lays out the matrix: rows on their rings, or the rows asked for on every ring asked for', () => {
    const cells = matrixCells([{ package: 'a' }, { path: '/b' }], ['split', 'packed']);
    const split = CONDITIONS.filter((c) => c.rings.includes('split')).length;
    const packed = CONDITIONS.filter((c) => c.rings.includes('packed')).length;
    expect(cells).toHaveLength(2 * (split + packed));
    expect(cells[0]).toEqual({ kernel: 'a', ring: 'split', row: 1 });
    expect(matrixCells(undefined, ['packed'], [5])).toEqual([
      { kernel: 'linux-image-cloud-amd64', ring: 'packed', row: 5 },
    ]);
    expect(() => matrixCells(undefined, ['split'], [99])).toThrow(/no condition numbered 99/);
  });
});

describe('command line', () => {
  it('parses conditions with kernels in the order given', () => {
    const cmd = parseCommandLine([
      'conditions',
      '--kernel-package',
      'linux-image-cloud-amd64',
      '--kernel',
      '/tmp/bzImage',
      '--kernel-package',
      'linux-image-6.12-cloud-amd64',
      '--rows',
      '2,5-7',
      '--ring',
      'split,packed',
      '--json',
      'out.json',
      '--jobs',
      '2',
    ]);
    expect(cmd).toMatchObject({
      action: 'conditions',
      kernels: [
        { package: 'linux-image-cloud-amd64' },
        { path: '/tmp/bzImage' },
        { package: 'linux-image-6.12-cloud-amd64' },
      ],
      rows: [2, 5, 6, 7],
      rings: ['split', 'packed'],
      json: 'out.json',
      jobs: 2,
    });
    expect(parseRows('1,3-4')).toEqual([1, 3, 4]);
    expect(() => parseRows('x')).toThrow(/--rows/);
    expect(() => parseCommandLine(['conditions', '--ring', 'twisted'])).toThrow(/--ring takes split or packed/);
    expect(() => parseCommandLine(['conditions', '--jobs', '0'])).toThrow(/--jobs/);
  });

  it('parses guest, and refuses a guest with neither or both of --run and --shell', () => {
    expect(
      parseCommandLine(['guest', '--kernel', '/k', '--modules', '/m', '--run', 'ip link show eth0']),
    ).toMatchObject({
      action: 'guest',
      kernel: { path: '/k', modules: '/m' },
      run: 'ip link show eth0',
      ring: 'split',
      queues: 1,
    });
    expect(() => parseCommandLine(['guest'])).toThrow(/either --run/);
    expect(() => parseCommandLine(['guest', '--run', 'x', '--shell'])).toThrow(/either --run/);
    expect(() => parseCommandLine(['guest', '--modules', '/m', '--shell'])).toThrow(/--modules goes with --kernel/);
    expect(() => parseCommandLine(['guest', '--kernel', 'a', '--kernel', 'b', '--shell'])).toThrow(/one kernel/);
  });
});

describe('kernels', () => {
  it("reads a bzImage's release from its setup header, and refuses a file that is not one", () => {
    const t = tempDir();
    try {
      const img = Buffer.alloc(0x1000);
      img.write('HdrS', 0x202, 'latin1');
      img.writeUInt16LE(0x400, 0x20e); // kernel_version at 0x400 + 0x200
      img.write('6.99.1-test (me@host) #1 SMP\0', 0x600, 'latin1');
      writeFileSync(join(t.dir, 'bzImage'), img);
      expect(bzImageRelease(join(t.dir, 'bzImage'))).toBe('6.99.1-test');
      writeFileSync(join(t.dir, 'text'), 'not a kernel'.padEnd(0x1000));
      expect(bzImageRelease(join(t.dir, 'text'))).toBeUndefined();
      expect(() => resolveKernel({ path: join(t.dir, 'text') })).toThrow(/not an x86 bzImage/);
      expect(() => resolveKernel({ path: join(t.dir, 'none') })).toThrow(/no such file/);
      // A config next to the image that lacks virtio-net: the error names the option.
      writeFileSync(
        join(t.dir, 'config-6.99.1-test'),
        'CONFIG_VIRTIO_PCI=y\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_DEVTMPFS=y\nCONFIG_SERIAL_8250_CONSOLE=y\n',
      );
      expect(() => resolveKernel({ path: join(t.dir, 'bzImage') })).toThrow(/CONFIG_VIRTIO_NET is not set/);
    } finally {
      t.cleanup();
    }
  });

  it('names each option a virtio-net guest lacks, and a module that was not given', () => {
    const ok =
      'CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_NET=m\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_DEVTMPFS=y\nCONFIG_SERIAL_8250_CONSOLE=y\n';
    expect(missingOptions(ok, new Set(['virtio_net']))).toEqual([]);
    expect(missingOptions(ok, new Set())).toEqual([
      'CONFIG_VIRTIO_NET =m but no virtio_net.ko was given (--modules DIR): the driver under test',
    ]);
    const noPci = ok.replace('CONFIG_VIRTIO_PCI=y', '# CONFIG_VIRTIO_PCI is not set');
    expect(missingOptions(noPci, new Set(['virtio_net']))[0]).toMatch(/^CONFIG_VIRTIO_PCI is not set/);
    expect(kernelReport('VUN-KERNEL 6.1.0-57-cloud-amd64\nVUN-MISSING CONFIG_VIRTIO_NET\n')).toEqual({
      release: '6.1.0-57-cloud-amd64',
      missing: ['CONFIG_VIRTIO_NET'],
    });
  });
});

describe('reports', () => {
  const result = (row: number, verdict: ConditionResult['verdict'], kernel: string): ConditionResult => ({
    row,
    ring: 'split',
    kernel,
    kernelLabel: kernel,
    verdict,
    signatures: verdict === 'finding' ? ['bad-ring', 'soft-lockup'] : ['bad-ring'],
    observed: 'seen <here> & there',
    evidence: { 'bad-ring': 'output.0:id 256 out of range' },
    expected: outcomeFor(conditionByRow(row)!, kernel, 'split'),
    reasons: verdict === 'unexpected' ? ['no link-dead'] : [],
    faults: 1,
    seconds: 12.5,
  });
  const report: ConditionsReport = {
    kernels: [{ label: 'a', release: '6.1.0-57-cloud-amd64' }],
    control: false,
    results: [result(2, 'finding', '6.1.0-57-cloud-amd64'), result(1, 'unexpected', '6.12.1')],
  };

  it('writes the documented JSON, a Markdown matrix and JUnit XML', () => {
    const json = JSON.parse(toJson(report)) as { kernels: unknown[]; results: Record<string, unknown>[] };
    expect(Object.keys(json.results[0]!)).toEqual(
      expect.arrayContaining(['row', 'ring', 'kernel', 'verdict', 'signatures', 'observed', 'evidence']),
    );
    expect(json.results[0]).toMatchObject({ row: 2, verdict: 'finding', signatures: ['bad-ring', 'soft-lockup'] });
    const md = toMarkdown(report);
    expect(md).toContain('| 6.1.0-57-cloud-amd64 split | 6.12.1 split |');
    expect(md).toContain('row 1, 6.12.1 split: unexpected: no link-dead');
    const xml = toJunit(report);
    expect(xml).toContain('failures="1"');
    expect(xml).toContain('<failure message="no link-dead">');
    expect(xml).toContain('seen &lt;here&gt; &amp; there');
  });
});

describe('docs/fault-conditions.md', () => {
  it('is the catalog as generated (node scripts/conditions-doc.mjs)', () => {
    const doc = readFileSync(join(packageRoot, 'docs', 'fault-conditions.md'), 'utf8');
    expect(doc).toBe(conditionsMarkdown());
  });
});
