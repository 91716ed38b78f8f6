/**
 * Session faults (`on: "session"`): what the front-end sees over a real unix socket when the
 * plan masks the feature offer, NACKs or delays a request, closes at a message, or disconnects
 * on a timer and then serves the reconnect. Each fault is also in the fault log.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, ErrorCode } from '../src/errors.js';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import type { FaultLine } from '../src/faults/log.js';
import { compilePlan, type FaultPlan, RECEIVE_MODES } from '../src/faults/plan.js';
import { encodeMemTable, encodeVringState, Request } from '../src/vhost-user/codec.js';
import { openFds, type Served, serve, waitFor } from './helpers/harness.js';
import type { MockFrontend } from './helpers/mock-frontend.js';

let srv: Served | undefined;
let fe: MockFrontend | undefined;
afterEach(async () => {
  fe?.close();
  fe = undefined;
  srv?.stop();
  srv = undefined;
});

function start(plan: FaultPlan): { lines: FaultLine[]; connect(): Promise<MockFrontend> } {
  srv = serve({ queuePairs: 1 });
  const lines: FaultLine[] = [];
  srv.backend.faultLog.on('line', (l) => lines.push(l));
  srv.backend.loadFaults(plan);
  const s = srv;
  return {
    lines,
    connect: async () => {
      const next = s.nextSession();
      const c = s.connect();
      await next;
      return c;
    },
  };
}

function refused(plan: unknown): string {
  try {
    compilePlan(plan, 2);
  } catch (e) {
    if (e instanceof ConfigError && e.code === ErrorCode.FaultPlanInvalid) return e.message;
    throw e;
  }
  throw new Error('accepted');
}

describe('session faults: validation', () => {
  it.each([
    [
      { name: 'a', on: 'session', do: 'nack', request: 'SET_NOTHING' },
      /request: unknown vhost-user request 'SET_NOTHING'/,
    ],
    [{ name: 'a', on: 'session', do: 'nack', request: 'GET_FEATURES' }, /answers with its own reply/],
    [{ name: 'a', on: 'session', do: 'nack' }, /nack needs request/],
    [
      { name: 'a', on: 'transmitq0', do: 'disconnect', atMs: 5 },
      /disconnect is a session action: on must be "session"/,
    ],
    [{ name: 'a', on: 'session', do: 'drop' }, /drop acts on a vring/],
    [{ name: 'a', on: 'session', do: 'disconnect' }, /disconnect needs atMs/],
    [{ name: 'a', on: 'session', do: 'delay-reply', request: 'SET_OWNER' }, /delay-reply takes value: ms/],
    [{ name: 'a', on: 'session', do: 'offer-mask', value: ['NO_SUCH_BIT'] }, /unknown feature NO_SUCH_BIT/],
    [
      { name: 'a', on: 'session', do: 'offer-mask', request: 'SET_OWNER', value: '0x1' },
      /GET_FEATURES or GET_PROTOCOL/,
    ],
    [{ name: 'a', on: 'session', do: 'receive-mode', value: 'huge' }, /small, big, mergeable/],
    [{ name: 'a', on: 'session', do: 'close-at', value: 0 }, /a message number/],
    [{ name: 'a', on: 'receiveq0', do: 'drop', request: 'SET_OWNER' }, /only session actions name a request/],
    [{ name: 'a', on: 'receiveq0', do: 'drop', session: 2 }, /only session actions take a session number/],
    [{ name: 'a', on: 'session', do: 'offer-mask', value: ['MRG_RXBUF'], session: 0 }, /session/],
    [{ name: 'a', on: 'transmitq0', do: 'drop', holdMs: 5 }, /only used-burst takes it/],
  ])('refuses %j', (rule, why) => {
    expect(refused({ seed: 1, rules: [rule] })).toMatch(why);
  });

  it('reads feature names with or without their prefix, and hex masks', () => {
    const p = compilePlan(
      {
        seed: 1,
        rules: [
          { name: 'a', on: 'session', do: 'offer-mask', value: ['MRG_RXBUF', 'NET_F_GUEST_TSO4', 'VERSION_1'] },
          { name: 'b', on: 'session', do: 'offer-mask', request: 'GET_PROTOCOL_FEATURES', value: '0x8' },
        ],
      },
      2,
    );
    expect(p.session[0]?.mask).toBe(featureMask(F.NET_F_MRG_RXBUF, F.NET_F_GUEST_TSO4, F.F_VERSION_1));
    expect(p.session[1]?.mask).toBe(8n);
    expect(p.rules).toEqual([]);
  });
});

describe('session faults: what the front-end sees', () => {
  it('offer-mask and receive-mode remove bits from the offer, each logged with old and new', async () => {
    const t = start({
      seed: 1,
      rules: [
        { name: 'small', on: 'session', do: 'receive-mode', value: 'small' },
        {
          name: 'no-ack',
          on: 'session',
          do: 'offer-mask',
          request: 'GET_PROTOCOL_FEATURES',
          value: ['REPLY_ACK'],
          count: 1,
        },
      ],
    });
    fe = await t.connect();
    const features = await fe.u64('GET_FEATURES');
    const protocol = await fe.u64('GET_PROTOCOL_FEATURES');
    const protocolAgain = await fe.u64('GET_PROTOCOL_FEATURES');
    const full = srv?.backend.session?.options.features as bigint;
    expect(full & RECEIVE_MODES.small).not.toBe(0n); // something to remove
    expect(features).toBe(full & ~RECEIVE_MODES.small);
    expect(protocol & 8n).toBe(0n);
    expect(protocolAgain & 8n, 'count 1: the second offer is whole').toBe(8n);
    expect(t.lines.map((l) => [l.rule, l.do, l.vring, l.request, l.field])).toEqual([
      ['small', 'receive-mode', 'session', 'GET_FEATURES', 'features'],
      ['no-ack', 'offer-mask', 'session', 'GET_PROTOCOL_FEATURES', 'protocol_features'],
    ]);
    expect(t.lines[0]?.old).toBe(`0x${full.toString(16)}`);
    expect(t.lines[0]?.new).toBe(`0x${features.toString(16)}`);
  });

  it('nack answers a REPLY_ACK failure and does not apply the request', async () => {
    const t = start({
      seed: 1,
      rules: [{ name: 'no', on: 'session', do: 'nack', request: 'SET_VRING_NUM', count: 1 }],
    });
    fe = await t.connect();
    await fe.handshake();
    expect(await fe.acked('SET_VRING_NUM', encodeVringState({ index: 0, num: 64 }))).toBe(1n);
    expect(srv?.backend.session?.vrings[0]?.num, 'not applied').toBe(0);
    expect(await fe.acked('SET_VRING_NUM', encodeVringState({ index: 0, num: 64 }))).toBe(0n);
    expect(srv?.backend.session?.vrings[0]?.num).toBe(64);
    expect(t.lines).toMatchObject([{ rule: 'no', do: 'nack', request: 'SET_VRING_NUM', event: 0 }]);
  });

  it('delay-reply answers late and keeps the order of later requests', async () => {
    const t = start({
      seed: 1,
      rules: [{ name: 'slow', on: 'session', do: 'delay-reply', request: 'GET_FEATURES', value: 300, count: 1 }],
    });
    fe = await t.connect();
    const t0 = performance.now();
    const c = fe;
    const order: string[] = [];
    const a = c.u64('GET_FEATURES').then(() => order.push('GET_FEATURES'));
    const b = c.u64('GET_PROTOCOL_FEATURES').then(() => order.push('GET_PROTOCOL_FEATURES'));
    await Promise.all([a, b]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(295);
    expect(order).toEqual(['GET_FEATURES', 'GET_PROTOCOL_FEATURES']);
    const t1 = performance.now();
    await c.u64('GET_FEATURES');
    expect(performance.now() - t1, 'count 1: the second is not delayed').toBeLessThan(250);
    expect(t.lines).toMatchObject([{ rule: 'slow', do: 'delay-reply', new: 300 }]);
  });

  it('close-at closes the connection at message N, closing the fds it carried', async () => {
    const t = start({ seed: 1, rules: [{ name: 'cut', on: 'session', do: 'close-at', value: 6 }] });
    fe = await t.connect();
    await fe.handshake(); // 5 messages
    const ram = fe.guestRam(1 << 20);
    const before = openFds();
    const closed = srv?.sessionClosed();
    fe.send(Request.SET_MEM_TABLE, encodeMemTable([ram.region]), { fds: [ram.fd] });
    await fe.peerClosed;
    expect(((await closed) as { code?: string } | undefined)?.code).toBe(ErrorCode.FaultDisconnect);
    await waitFor(() => openFds() <= before, 2000, 'the fd sent with message 6 closed');
    expect(t.lines).toMatchObject([
      { rule: 'cut', do: 'close-at', field: 'message', new: 6, request: 'SET_MEM_TABLE' },
    ]);
  });

  it('a rule with session: 2 shrinks the offer of the second session only', async () => {
    const t = start({
      seed: 1,
      rules: [{ name: 'shrink', on: 'session', do: 'offer-mask', value: ['MRG_RXBUF'], session: 2 }],
    });
    fe = await t.connect();
    const first = await fe.u64('GET_FEATURES');
    const firstAgain = await fe.u64('GET_FEATURES');
    fe.close();
    fe = await t.connect();
    const second = await fe.u64('GET_FEATURES');
    fe.close();
    fe = await t.connect();
    const third = await fe.u64('GET_FEATURES');
    const bit = featureMask(F.NET_F_MRG_RXBUF);
    expect(first & bit, 'the first session is offered MRG_RXBUF').toBe(bit);
    expect(firstAgain & bit).toBe(bit);
    expect(second & bit, 'the second is not').toBe(0n);
    expect(third & bit, 'nor is the rule in force after it').toBe(bit);
    expect(t.lines.map((l) => [l.rule, l.do, l.request])).toEqual([['shrink', 'offer-mask', 'GET_FEATURES']]);
  });

  it('disconnect closes the session at atMs and serves the reconnect (count limits it)', async () => {
    const t = start({ seed: 1, rules: [{ name: 'flap', on: 'session', do: 'disconnect', atMs: 200, count: 1 }] });
    const s = srv as Served;
    const t0 = performance.now();
    fe = await t.connect();
    await fe.handshake();
    await fe.peerClosed;
    const after = performance.now() - t0;
    expect(after).toBeGreaterThanOrEqual(195);
    expect(after).toBeLessThan(2000);
    fe.close();
    fe = await t.connect();
    await fe.handshake();
    await new Promise((r) => setTimeout(r, 400));
    expect(fe.isPeerClosed, 'count 1: the second session is left alone').toBe(false);
    expect(s.backend.sessions).toBe(2);
    expect(t.lines).toMatchObject([{ rule: 'flap', do: 'disconnect', vring: 'session', event: 0 }]);
  });

  it('a plan loaded mid-session arms its disconnect from the session start', async () => {
    srv = serve({ queuePairs: 1 });
    const next = srv.nextSession();
    fe = srv.connect();
    await next;
    await fe.handshake();
    const ms = srv.backend.sessionMs() as number;
    expect(ms).toBeGreaterThan(0);
    srv.backend.loadFaults({
      seed: 1,
      rules: [{ name: 'flap', on: 'session', do: 'disconnect', atMs: Math.round(ms) + 150 }],
    });
    const t0 = performance.now();
    await fe.peerClosed;
    expect(performance.now() - t0).toBeLessThan(1500);
  });
});
