/**
 * The virtio-net device rules, stated twice (src/net/rules.ts for the TS data plane,
 * native/net_rules.h for the C++ workers): known answers from the spec hold each to the spec,
 * and a property test holds them to each other over random features and headers. Three cases
 * pin the drifts the two once had (UDP GSO with GUEST_UFO, TUN_F_TSO_ECN without TSO, flow
 * affinity on a disabled transmitq).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../src/features.js';
import { COUNTER_NAMES } from '../src/net/counters.js';
import {
  ChainVerdict,
  GSO_ECN,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP,
  HDR_F_DATA_VALID,
  HDR_F_NEEDS_CSUM,
  headerLen,
  numBuffersOffset,
  ReceiveVerdict,
  receiveChainRule,
  receiveRule,
  recordsFlow,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_UFO,
  tapOffloads,
} from '../src/net/rules.js';
import { native } from './helpers/harness.js';

const C = native.netRules;
const f = (...bits: bigint[]) => featureMask(...bits);
const CSUM = f(F.NET_F_GUEST_CSUM);

/** Each rule, as [name, TS function, C++ function, known answers [args, expected]]. */
describe('virtio-net device rules: known answers, both implementations', () => {
  const both = <A extends unknown[], R>(ts: (...a: A) => R, cc: (...a: A) => R, cases: [A, R, string][]) => {
    for (const [args, want, why] of cases) {
      expect(ts(...args), `TS: ${why}`).toBe(want);
      expect(cc(...args), `C++: ${why}`).toBe(want);
    }
  };

  it('header length (§5.1.6)', () => {
    both(headerLen, C.headerLen, [
      [[0n], 10, 'legacy, no MRG_RXBUF: no num_buffers'],
      [[f(F.NET_F_MRG_RXBUF)], 12, 'MRG_RXBUF: num_buffers'],
      [[f(F.F_VERSION_1)], 12, 'VERSION_1: num_buffers always'],
    ]);
    both(numBuffersOffset, C.numBuffersOffset, [
      [[12], 10, 'bytes 10-11'],
      [[10], -1, 'no field'],
    ]);
  });

  it('which host frames the guest may receive (§5.1.6.4.1)', () => {
    const { deliver, clearFlags, dropNeedsCsum, dropGsoNotAcked, dropGsoUnknown, dropEcnNotAcked } = ReceiveVerdict;
    both(receiveRule, C.receiveRule, [
      [[0n, 0, 0], deliver, 'a plain frame'],
      [[0n, HDR_F_NEEDS_CSUM, 0], dropNeedsCsum, 'partial checksum without GUEST_CSUM'],
      [[CSUM, HDR_F_NEEDS_CSUM, 0], deliver, 'partial checksum with GUEST_CSUM'],
      [[0n, HDR_F_DATA_VALID, 0], clearFlags, 'DATA_VALID without GUEST_CSUM: flags MUST be zero'],
      [[CSUM, HDR_F_DATA_VALID, 0], deliver, 'DATA_VALID with GUEST_CSUM'],
      [[CSUM, 0, GSO_TCPV4], dropGsoNotAcked, 'TSO4 frame without GUEST_TSO4'],
      [[CSUM | f(F.NET_F_GUEST_TSO4), 0, GSO_TCPV4], deliver, 'TSO4 frame with GUEST_TSO4'],
      [[CSUM | f(F.NET_F_GUEST_TSO4), 0, GSO_TCPV6], dropGsoNotAcked, 'TSO6 frame with TSO4 only'],
      [[CSUM | f(F.NET_F_GUEST_TSO6), 0, GSO_TCPV6], deliver, 'TSO6 frame with GUEST_TSO6'],
      // Drift 1: C++ passed UDP GSO with GUEST_UFO, TS never did; the spec says it may.
      [[CSUM | f(F.NET_F_GUEST_UFO), 0, GSO_UDP], deliver, 'UDP GSO with GUEST_UFO'],
      [[CSUM, 0, GSO_UDP], dropGsoNotAcked, 'UDP GSO without GUEST_UFO'],
      [[CSUM | f(F.NET_F_GUEST_TSO4), 0, GSO_TCPV4 | GSO_ECN], dropEcnNotAcked, 'ECN GSO without GUEST_ECN'],
      [[CSUM | f(F.NET_F_GUEST_TSO4, F.NET_F_GUEST_ECN), 0, GSO_TCPV4 | GSO_ECN], deliver, 'ECN GSO with GUEST_ECN'],
      [[CSUM | f(F.NET_F_GUEST_ECN), 0, GSO_ECN], dropEcnNotAcked, 'ECN bit on a non-GSO frame'],
      [[CSUM, 0, 5], dropGsoUnknown, 'UDP_L4 (USO) is not passed'],
      [[CSUM, 0, 2], dropGsoUnknown, 'gso_type 2 is undefined'],
    ]);
  });

  it('TAP offloads from the guest features (linux/if_tun.h TUNSETOFFLOAD)', () => {
    both(tapOffloads, C.tapOffloads, [
      [[0n], 0, 'nothing without GUEST_CSUM'],
      [[f(F.NET_F_GUEST_TSO4)], 0, 'TSO needs GUEST_CSUM'],
      [[CSUM], TUN_F_CSUM, 'checksum only'],
      [[CSUM | f(F.NET_F_GUEST_TSO4, F.NET_F_GUEST_TSO6)], TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, 'TSO4 and TSO6'],
      // Drift 2: TS set TSO_ECN on GUEST_ECN alone; the tun driver refuses that (EINVAL).
      [[CSUM | f(F.NET_F_GUEST_ECN)], TUN_F_CSUM, 'ECN without TSO4/6 is not asked for'],
      [[CSUM | f(F.NET_F_GUEST_TSO4, F.NET_F_GUEST_ECN)], TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN, 'ECN with TSO4'],
      [[CSUM | f(F.NET_F_GUEST_UFO)], TUN_F_CSUM | TUN_F_UFO, 'UFO'],
    ]);
  });

  it('which receive buffers a frame may use (§5.1.6.3.1)', () => {
    const MRG = f(F.NET_F_MRG_RXBUF);
    both(receiveChainRule, C.receiveChainRule, [
      [[0n, 10, 1500, 1510, 0], ChainVerdict.tooSmall, 'without MRG_RXBUF one buffer holds the whole frame'],
      [[0n, 10, 1510, 1510, 0], ChainVerdict.take, 'an exact fit'],
      [[MRG, 12, 100, 1512, 0], ChainVerdict.take, 'with MRG_RXBUF a frame spans buffers'],
      [[MRG, 12, 8, 1512, 0], ChainVerdict.tooSmall, 'the first buffer holds at least the header'],
      [[MRG, 12, 8, 1512, 1], ChainVerdict.take, 'later buffers may be small'],
    ]);
  });

  it('flow affinity learns only from frames that leave', () => {
    // Drift 3: C++ recorded the flow before the disabled-transmitq check, TS after.
    both(recordsFlow, C.recordsFlow, [
      [[true, true], true, 'an enabled transmitq'],
      [[true, false], false, 'a disabled transmitq discards its frames'],
      [[false, true], false, 'no flow affinity'],
    ]);
  });
});

describe('virtio-net device rules: TS and C++ agree', () => {
  const features = fc.bigInt(0n, (1n << 40n) - 1n);
  it('on random features and headers', () => {
    fc.assert(
      fc.property(features, fc.nat(0xff), fc.nat(0xff), (feat, flags, gso) => {
        expect(C.headerLen(feat)).toBe(headerLen(feat));
        expect(C.tapOffloads(feat)).toBe(tapOffloads(feat));
        expect(C.receiveRule(feat, flags, gso)).toBe(receiveRule(feat, flags, gso));
      }),
      { numRuns: 3000 },
    );
  });
  it('on random receive buffers', () => {
    fc.assert(
      fc.property(
        features,
        fc.constantFrom(10, 12),
        fc.nat(70000),
        fc.nat(70000),
        fc.nat(4),
        (feat, h, chain, frame, nth) => {
          expect(C.receiveChainRule(feat, h, chain, frame, nth)).toBe(receiveChainRule(feat, h, chain, frame, nth));
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('counter slots', () => {
  it('TS names the slots as the addon defines them', () => {
    expect([...COUNTER_NAMES]).toEqual(native.counterNames);
    expect(native.countersPerVring).toBe(COUNTER_NAMES.length);
  });
});
