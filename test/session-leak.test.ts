/**
 * A session is garbage once its connection is gone. Found by the million-sequence control-plane
 * fuzz run (it ran out of heap after about 20 minutes): a closed poller kept a strong reference
 * to its callback, which reached the poller's own JS object through the connection, so every
 * session ever served stayed alive (about 5 KB each). Here 300 sessions come and go; after the
 * event loop turns and a full GC, none may be left (but the very last).
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeMessage, Flags, Request } from '../src/vhost-user/codec.js';
import type { Session } from '../src/vhost-user/session.js';
import { connectNow, native, type Served, serve } from './helpers/harness.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let srv: Served;
beforeAll(() => {
  srv = serve({ queuePairs: 2 }, { kind: 'null' }, 'native');
});
afterAll(() => srv.stop());

describe('sessions are collected after they close', () => {
  it('300 sessions served and closed leave none alive', async () => {
    const refs: WeakRef<Session>[] = [];
    for (let i = 0; i < 300; i++) {
      const { fd, conn, session, read } = connectNow(srv);
      refs.push(new WeakRef(session));
      native.sendMsg(fd, encodeMessage(Request.GET_FEATURES, Flags.VERSION), []);
      read();
      native.close(fd);
      read();
      expect(conn.isClosed).toBe(true);
    }
    // Handles close and native finalizers run on the event loop: let it turn, then collect.
    for (let k = 0; k < 5; k++) await new Promise((r) => setTimeout(r, 10));
    gc();
    await new Promise((r) => setTimeout(r, 10));
    gc();
    // At most the last one (the loop's last locals may still hold it); before the fix, all 300.
    expect(refs.filter((r) => r.deref() !== undefined).length).toBeLessThanOrEqual(1);
  });
});
