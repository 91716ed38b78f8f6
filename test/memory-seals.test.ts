/**
 * Memory regions whose file the front-end could shrink after we mapped it: QEMU seals its
 * memfds (F_SEAL_SHRINK, GROW, SEAL); the backend checks the seals at map time, reports them
 * per region (`/status`, the session view) and warns once for a region that is not sealed.
 */
import { describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { statusOf } from '../src/metrics/http.js';
import { native, type Served, serve, servedPerTest } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

/** What each test serves, shut down after it. */
const t = servedPerTest();

const F_SEAL_SEAL = 1;
const F_SEAL_SHRINK = 2;
const F_SEAL_GROW = 4;

describe('memory region seals', () => {
  it('a region sealed as QEMU seals it is reported sealed; an unsealed one is not', async () => {
    t.srv = serve({ queuePairs: 1 });
    const next = t.srv.nextSession();
    t.fe = t.srv.connect();
    const session = await next;
    const changes: string[] = [];
    session.onChange((c) => changes.push(`${c.what} ${String(c.guestAddr ?? '')}`));
    await t.fe.handshake();
    await t.fe.acked('SET_FEATURES', encodeFeatures());
    const size = 1 << 20;
    const sealed = native.memfdCreate('sealed-ram', size, { sealable: true });
    native.addSeals(sealed, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    expect(native.fileSeals(sealed) & F_SEAL_SHRINK).toBe(F_SEAL_SHRINK);
    const loose = native.memfdCreate('loose-ram', size);
    const region = (gpa: bigint) => ({
      guestAddr: gpa,
      size: BigInt(size),
      userAddr: 0x7f0000000000n + gpa,
      mmapOffset: 0n,
    });
    expect(
      await t.fe.acked('SET_MEM_TABLE', MockFrontend.memTable([region(0n), region(BigInt(size))]), [sealed, loose]),
    ).toBe(0n);
    native.close(sealed);
    native.close(loose);
    expect(session.view().memory.map((r) => r.sealed)).toEqual([true, false]);
    // Said once, for the unsealed region only.
    expect(changes.filter((c) => c.startsWith('memory region not sealed'))).toEqual([
      `memory region not sealed 0x${size.toString(16)}`,
    ]);
    const status = statusOf((t.srv as Served).backend) as { memory: { sealed: boolean }[] };
    expect(status.memory.map((r) => r.sealed)).toEqual([true, false]);
  });
});

function encodeFeatures(): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(featureMask(F.F_VERSION_1, F.VHOST_USER_F_PROTOCOL_FEATURES));
  return b;
}
