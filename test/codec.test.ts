import { describe, expect, it } from 'vitest';
import { ErrorCode, ProtocolError } from '../src/errors.js';
import { featureMask, featureNames, hasFeature, ProtocolFeature, VirtioFeature } from '../src/features.js';
import {
  checkHeader,
  OWN_REPLY,
  decodeHeader,
  decodePayload,
  encodeMemTable,
  encodeMessage,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  Flags,
  payloadKind,
  Request,
  requestName,
} from '../src/vhost-user/codec.js';
import { handlerTable } from '../src/vhost-user/handlers.js';

function header(request: number, flags: number, size: number) {
  return decodeHeader(encodeMessage(request, flags, Buffer.alloc(size)));
}
function codeOf(fn: () => void): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as ProtocolError).code;
  }
  return undefined;
}

describe('features', () => {
  it('tests bit numbers, not masks', () => {
    const m = featureMask(VirtioFeature.F_VERSION_1, ProtocolFeature.REPLY_ACK);
    expect(hasFeature(m, 32n)).toBe(true);
    expect(hasFeature(m, 3n)).toBe(true);
    expect(hasFeature(m, 2n)).toBe(false);
    expect(m).toBe((1n << 32n) | 8n);
    // Bit 3 is REPLY_ACK among protocol features and NET_F_MTU among virtio ones.
    expect(featureNames(m | (1n << 63n), VirtioFeature)).toEqual(['NET_F_MTU', 'F_VERSION_1', 'bit63']);
    expect(featureNames(m, ProtocolFeature)).toEqual(['REPLY_ACK', 'bit32']);
  });
});

describe('header checks', () => {
  it('accepts a well-formed request and reads need_reply', () => {
    const h = header(Request.SET_FEATURES, Flags.VERSION | Flags.NEED_REPLY, 8);
    expect(() => checkHeader(h)).not.toThrow();
    expect(h.needReply).toBe(true);
    expect(h.size).toBe(8);
  });
  it.each([
    ['version 0', Request.GET_FEATURES, 0, 0, ErrorCode.BadVersion],
    ['version 2', Request.GET_FEATURES, 2, 0, ErrorCode.BadVersion],
    ['reply flag on a request', Request.GET_FEATURES, Flags.VERSION | Flags.REPLY, 0, ErrorCode.BadFlags],
    ['reserved flag bit', Request.GET_FEATURES, Flags.VERSION | 0x100, 0, ErrorCode.BadFlags],
    ['unknown request 0', 0, Flags.VERSION, 0, ErrorCode.UnknownRequest],
    ['unknown request 99', 99, Flags.VERSION, 0, ErrorCode.UnknownRequest],
    ['GET_FEATURES with payload', Request.GET_FEATURES, Flags.VERSION, 8, ErrorCode.BadSize],
    ['SET_FEATURES short', Request.SET_FEATURES, Flags.VERSION, 4, ErrorCode.BadSize],
    ['SET_VRING_ADDR short', Request.SET_VRING_ADDR, Flags.VERSION, 32, ErrorCode.BadSize],
    ['SET_MEM_TABLE between sizes', Request.SET_MEM_TABLE, Flags.VERSION, 8 + 33, ErrorCode.BadSize],
    ['SET_MEM_TABLE over 8 regions', Request.SET_MEM_TABLE, Flags.VERSION, 8 + 9 * 32, ErrorCode.BadSize],
    ['ADD_MEM_REG short', Request.ADD_MEM_REG, Flags.VERSION, 32, ErrorCode.BadSize],
    ['GET_CONFIG huge', Request.GET_CONFIG, Flags.VERSION, 100_000, ErrorCode.BadSize],
  ])('rejects %s', (_what, request, flags, size, code) => {
    expect(codeOf(() => checkHeader(header(request, flags, size)))).toBe(code);
  });
  it('knows every request number of the spec from 1 to 43', () => {
    for (let r = 1; r <= 43; r++) {
      expect(payloadKind(r), requestName(r)).toBeDefined();
      expect(requestName(r)).not.toMatch(/UNKNOWN/);
    }
    expect(payloadKind(44)).toBeUndefined();
  });
});

describe('payloads', () => {
  it('round-trips u64 including the top bit', () => {
    const p = decodePayload(Request.SET_FEATURES, encodeU64(0x8000_0001_0000_0003n));
    expect(p).toEqual({ kind: 'u64', u64: 0x8000_0001_0000_0003n });
  });
  it('round-trips vring state and address', () => {
    expect(decodePayload(Request.SET_VRING_BASE, encodeVringState({ index: 3, num: 65535 }))).toEqual({
      kind: 'vringState',
      state: { index: 3, num: 65535 },
    });
    const addr = {
      index: 1,
      flags: 1,
      descUserAddr: 0x7fff_0000_1000n,
      usedUserAddr: 0x7fff_0000_3000n,
      availUserAddr: 0x7fff_0000_2000n,
      logGuestAddr: 0xffff_ffff_ffff_fff0n,
    };
    const b = encodeVringAddr(addr);
    expect(b.length).toBe(40);
    expect(b.readUInt32LE(0)).toBe(1);
    expect(b.readBigUInt64LE(8)).toBe(addr.descUserAddr);
    expect(decodePayload(Request.SET_VRING_ADDR, b)).toEqual({ kind: 'vringAddr', addr });
  });
  it('decodes a memory table with exactly nregions, or the full 8-slot array', () => {
    const r = { guestAddr: 0x1000n, size: 0x2000n, userAddr: 0x7f00_0000_0000n, mmapOffset: 0x40n };
    const exact = encodeMemTable([r]);
    expect(exact.length).toBe(40);
    expect(decodePayload(Request.SET_MEM_TABLE, exact)).toEqual({
      kind: 'memTable',
      table: { nregions: 1, regions: [r] },
    });
    const full = Buffer.alloc(8 + 8 * 32);
    exact.copy(full);
    expect(decodePayload(Request.SET_MEM_TABLE, full)).toEqual({
      kind: 'memTable',
      table: { nregions: 1, regions: [r] },
    });
  });
  it('rejects nregions larger than the payload holds', () => {
    const b = encodeMemTable([{ guestAddr: 0n, size: 1n, userAddr: 0n, mmapOffset: 0n }]);
    b.writeUInt32LE(2, 0);
    expect(codeOf(() => decodePayload(Request.SET_MEM_TABLE, b))).toBe(ErrorCode.BadSize);
  });
  it('lays out a single region description after 8 bytes of padding', () => {
    const r = { guestAddr: 1n, size: 2n, userAddr: 3n, mmapOffset: 4n };
    const b = encodeSingleRegion(r);
    expect(b.length).toBe(40);
    expect(b.readBigUInt64LE(0)).toBe(0n);
    expect(b.readBigUInt64LE(8)).toBe(1n);
    expect(b.readBigUInt64LE(32)).toBe(4n);
    expect(decodePayload(Request.ADD_MEM_REG, b)).toEqual({ kind: 'singleRegion', region: r });
  });
  it('encodes a header little-endian with the payload size', () => {
    const m = encodeMessage(
      Request.GET_VRING_BASE,
      Flags.VERSION | Flags.REPLY,
      encodeVringState({ index: 1, num: 7 }),
    );
    expect([...m.subarray(0, 12)]).toEqual([11, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0]);
  });
});

describe('the handler table and the codec', () => {
  it('agree on every row: the payload kind a row is typed for is the one the codec decodes', () => {
    for (const [name, row] of Object.entries(handlerTable)) {
      const request = Request[name as keyof typeof Request];
      expect(payloadKind(request), name).toBe(row?.payload);
    }
  });
  it('agree on which requests answer with a reply of their own (and so cannot be NACKed)', () => {
    for (const [name, row] of Object.entries(handlerTable)) {
      expect(OWN_REPLY.has(name as keyof typeof Request), name).toBe(row?.reply !== 'ack');
    }
  });
});
