/**
 * Malformed input from the front-end: each case must close that connection cleanly (or NACK
 * a request it can refuse), leak no fd and no mapping, and leave the backend serving the
 * next connection.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors.js';
import { encodeMessage, encodeU64, Flags, Request } from '../src/vhost-user/codec.js';
import { native, openFds, type Served, serve } from './helpers/harness.js';
import { MockFrontend } from './helpers/mock-frontend.js';

let srv: Served;
beforeAll(() => {
  srv = serve({ queuePairs: 1 });
});
afterAll(() => srv.stop());

type Outcome = { closed: true; code: string } | { closed: false; ack: bigint };

interface Case {
  name: string;
  /** Runs against a connected front-end after the handshake; returns what the backend did. */
  run(fe: MockFrontend): Promise<Outcome>;
}

async function closedWith(
  fe: MockFrontend,
  closing: Promise<Error | undefined>,
  selfClosed: boolean,
): Promise<Outcome> {
  if (!selfClosed) await fe.expectClosed();
  const reason = (await closing) as { code?: string } | undefined;
  return { closed: true, code: reason?.code ?? 'none' };
}

const cases: (Case & { expect: Outcome })[] = [];
function closes(
  name: string,
  code: string,
  send: (fe: MockFrontend) => void | Promise<void>,
  selfClosed = false,
): void {
  cases.push({
    name,
    expect: { closed: true, code },
    run: async (fe) => {
      const closing = srv.sessionClosed();
      await send(fe);
      return closedWith(fe, closing, selfClosed);
    },
  });
}
function nacks(name: string, send: (fe: MockFrontend) => Promise<bigint>): void {
  cases.push({ name, expect: { closed: false, ack: 1n }, run: async (fe) => ({ closed: false, ack: await send(fe) }) });
}

closes('wrong payload size', ErrorCode.BadSize, (fe) =>
  fe.sendRaw(encodeMessage(Request.SET_FEATURES, Flags.VERSION, Buffer.alloc(4))),
);
closes('unknown request', ErrorCode.UnknownRequest, (fe) => fe.send(99));
closes('request the backend does not serve', ErrorCode.UnsupportedRequest, (fe) =>
  fe.send(Request.GET_CONFIG, Buffer.alloc(12)),
);
closes('wrong version bits', ErrorCode.BadVersion, (fe) => fe.send(Request.GET_FEATURES, undefined, { flags: 0x2 }));
closes('reply flag on a request', ErrorCode.BadFlags, (fe) =>
  fe.send(Request.GET_FEATURES, undefined, { flags: Flags.VERSION | Flags.REPLY }),
);
closes('too many fds for the request', ErrorCode.BadFdCount, (fe) => {
  fe.send(Request.SET_FEATURES, encodeU64(0n), { fds: [fe.eventfd()] });
});
closes('more fds than any message may carry', ErrorCode.BadFdCount, (fe) => {
  const fds = Array.from({ length: 12 }, () => fe.eventfd());
  fe.send(Request.SET_MEM_TABLE, MockFrontend.memTable([]), { fds });
});
closes('missing fds for SET_MEM_TABLE', ErrorCode.BadFdCount, (fe) => {
  const ram = fe.guestRam(4096);
  fe.send(Request.SET_MEM_TABLE, MockFrontend.memTable([ram.region]));
});
closes('missing kick fd without the no-fd bit', ErrorCode.BadFdCount, (fe) =>
  fe.send(Request.SET_VRING_KICK, encodeU64(0n)),
);
closes('fd with the no-fd bit', ErrorCode.BadFdCount, (fe) =>
  fe.send(Request.SET_VRING_CALL, MockFrontend.vringFileNoFd(0), { fds: [fe.eventfd()] }),
);
closes('reserved bits in a vring file payload', ErrorCode.BadField, (fe) =>
  fe.send(Request.SET_VRING_CALL, encodeU64(0x1_0000n), { fds: [fe.eventfd()] }),
);
closes('vring index out of range (SET_VRING_NUM)', ErrorCode.VringIndex, (fe) =>
  fe.send(Request.SET_VRING_NUM, MockFrontend.state({ index: 2, num: 256 })),
);
closes('vring index out of range (SET_VRING_KICK)', ErrorCode.VringIndex, (fe) =>
  fe.send(Request.SET_VRING_KICK, encodeU64(200n), { fds: [fe.eventfd()] }),
);
closes('nregions beyond the payload', ErrorCode.BadSize, (fe) => {
  const ram = fe.guestRam(4096);
  const b = MockFrontend.memTable([ram.region]);
  b.writeUInt32LE(3, 0);
  fe.send(Request.SET_MEM_TABLE, b, { fds: [ram.fd] });
});
closes(
  'peer closing mid-message (header only)',
  ErrorCode.PeerClosedMidMessage,
  (fe) => {
    fe.sendRaw(encodeMessage(Request.SET_FEATURES, Flags.VERSION, encodeU64(1n)).subarray(0, 12), [fe.eventfd()]);
    fe.close();
  },
  true,
);
closes(
  'peer closing mid-message (half a header)',
  ErrorCode.PeerClosedMidMessage,
  (fe) => {
    fe.sendRaw(Buffer.from([2, 0, 0, 0, 1]));
    fe.close();
  },
  true,
);
closes('a 1 MiB garbage stream', 'any', (fe) => {
  const garbage = randomBytes(1 << 20);
  // Make sure it is garbage from the first byte: a request number no spec knows.
  garbage.writeUInt32LE(0xdead_beef, 0);
  try {
    for (let off = 0; off < garbage.length; off += 64 * 1024) fe.sendRaw(garbage.subarray(off, off + 64 * 1024));
  } catch {
    // The backend may close while we are still writing (EPIPE/ECONNRESET): that is the point.
  }
});

nacks('region with an offset beyond its file', (fe) => {
  const ram = fe.guestRam(4096, 0n, 0x7f00_0000_0000n, 8192);
  return fe.acked('ADD_MEM_REG', MockFrontend.region({ ...ram.region, mmapOffset: 8192n }), [ram.fd]);
});
nacks('region larger than its file', (fe) => {
  const ram = fe.guestRam(4096);
  return fe.acked('SET_MEM_TABLE', MockFrontend.memTable([{ ...ram.region, size: 1n << 20n }]), [ram.fd]);
});
nacks('region of size 0', (fe) => {
  const ram = fe.guestRam(4096);
  return fe.acked('ADD_MEM_REG', MockFrontend.region({ ...ram.region, size: 0n }), [ram.fd]);
});
nacks('region wrapping the address space', (fe) => {
  const ram = fe.guestRam(4096);
  return fe.acked(
    'ADD_MEM_REG',
    MockFrontend.region({ ...ram.region, guestAddr: 0xffff_ffff_ffff_f000n, size: 0x2000n }),
    [ram.fd],
  );
});
nacks('mapping that fails (an eventfd as region fd)', (fe) => {
  const ram = fe.guestRam(4096);
  return fe.acked('ADD_MEM_REG', MockFrontend.region(ram.region), [fe.eventfd()]);
});
nacks('second region of a table fails to map: first is undone', (fe) => {
  const ram = fe.guestRam(4096);
  const other = { ...ram.region, guestAddr: 0x10000n, userAddr: 0x7f00_1000_0000n };
  return fe.acked('SET_MEM_TABLE', MockFrontend.memTable([ram.region, other]), [ram.fd, fe.eventfd()]);
});

describe('bad input from the front-end', () => {
  it.each(cases)('$name', async (c) => {
    const before = openFds();
    const mapsBefore = native.mappingCount();
    const next = srv.nextSession();
    const fe = srv.connect();
    const session = await next;
    await fe.handshake();
    const out = await c.run(fe);
    if (c.expect.closed) {
      expect(out.closed).toBe(true);
      if (c.expect.code !== 'any') expect(out).toEqual(c.expect);
    } else {
      expect(out).toEqual(c.expect);
      // The session is intact: it still answers.
      expect(await fe.u64('GET_QUEUE_NUM')).toBe(1n);
      expect(session.memory.regions.length).toBe(0);
    }
    // The backend serves the next connection.
    const closing = srv.sessionClosed();
    fe.close();
    await closing;
    const next2 = srv.nextSession();
    const fe2 = srv.connect();
    await next2;
    expect(await fe2.u64('GET_FEATURES')).toBeGreaterThan(0n);
    const closing2 = srv.sessionClosed();
    fe2.close();
    await closing2;
    expect(native.mappingCount()).toBe(mapsBefore);
    expect(openFds()).toBe(before);
  });
});
