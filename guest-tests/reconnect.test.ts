/**
 * The backend killed (SIGKILL) and restarted while the guest runs: QEMU (reconnect=1)
 * redials, renegotiates and resumes the split rings at used->idx; traffic flows again. The
 * backend creates its TAP persistent (`tap:vun0,persist`), so the device and its address
 * survive the kill and the restarted backend attaches to it.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir, waitFor } from '../test/helpers/harness.js';
import type { Proc } from '../src/util/proc.js';
import { bootGuest, Netns, requireRoot, startBackend, waitForLink } from '../src/guest/guest.js';
import { existsSync } from 'node:fs';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('backend restart under a running guest', () => {
  it('traffic resumes after the backend is killed and started again', async () => {
    requireRoot();
    const ns = new Netns();
    cleanups.push(() => ns.delete());
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const sock = join(tmp.dir, 'vhost.sock');
    let backend: Proc = startBackend(ns, sock, ['--backend', 'tap:vun0,persist']);
    cleanups.push(() => backend.stop().then(() => undefined));
    // A persistent TAP outlives the backend: deleted here (before the namespace).
    cleanups.push(() => void ns.try('ip link del vun0'));
    await waitForLink(ns, 'vun0');
    ns.sh('ip addr add 10.77.0.1/24 dev vun0');
    await waitFor(() => existsSync(sock), 15_000, 'backend socket');
    const g = bootGuest({
      socketPath: sock,
      reconnect: true,
      ip: '10.77.0.2/24',
      script: `
H=10.77.0.1
ping -c 3 -W 3 $H > /tmp/p 2>&1; res before $?
phase restart
# First the outage (the backend is gone), then traffic again.
i=0; while [ $i -lt 40 ] && ping -c 1 -W 1 $H >/dev/null 2>&1; do i=$((i+1)); sleep 0.5; done
res outage-seen $([ $i -lt 40 ] && echo 0 || echo 1)
i=0; ok=1; while [ $i -lt 90 ]; do ping -c 1 -W 1 $H >/dev/null 2>&1 && { ok=0; break; }; i=$((i+1)); done
res after-restart $ok "after $i tries"
ping -c 5 -W 2 $H > /tmp/p2 2>&1; res steady $? "$(tail -2 /tmp/p2 | tr '\\n' ' ')"
`,
    });
    cleanups.push(() => g.cleanup());
    await g.phase('restart');
    await new Promise((r) => setTimeout(r, 1000));
    await backend.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 3000));
    // The TAP and its address are still there with the backend gone.
    expect(ns.sh('ip -br addr show vun0')).toMatch(/10\.77\.0\.1\/24/);
    backend = startBackend(ns, sock, ['--backend', 'tap:vun0,persist']);
    const r = await g.done();
    const ctx = `guest:\n${g.qemu.tail(30)}\nbackend:\n${backend.tail(15)}`;
    console.log(`guest result: ${JSON.stringify(Object.fromEntries(r))}`);
    expect(r.get('before')?.rc, ctx).toBe(0);
    expect(r.get('outage-seen')?.rc, ctx).toBe(0);
    expect(r.get('after-restart')?.rc, ctx).toBe(0);
    expect(r.get('steady')?.rc, ctx).toBe(0);
    expect(backend.output).toMatch(/"msg":"vring processing"/);
  }, 300_000);
});
