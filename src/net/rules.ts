/**
 * The virtio-net device rules, as pure functions of the negotiated features: header size,
 * which host frames the guest may receive, the TAP offloads, which receive buffers a frame may
 * use, where num_buffers goes, when flow affinity learns a flow. The TS data plane applies
 * these; native/net_rules.h states the same rules for the C++ workers, and
 * test/net-rules.test.ts holds the two together and to known answers.
 */
import { hasFeature, VirtioFeature as F } from '../features.js';

/** virtio-net header `flags` bits and `gso_type` values (virtio 1.2 §5.1.6). */
export const HDR_F_NEEDS_CSUM = 1;
export const HDR_F_DATA_VALID = 2;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_ECN = 0x80;

/** TUNSETOFFLOAD bits (linux/if_tun.h). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;

/** virtio 1.2 §5.1.6: the header has num_buffers with VERSION_1 or MRG_RXBUF, else 10 bytes. */
export function headerLen(features: bigint): number {
  return hasFeature(features, F.F_VERSION_1) || hasFeature(features, F.NET_F_MRG_RXBUF) ? 12 : 10;
}

/** Where num_buffers sits in the header (bytes 10-11), or -1 when the header has none. */
export function numBuffersOffset(hdrLen: number): number {
  return hdrLen === 12 ? 10 : -1;
}

/** What the device does with a frame from the host (native/net_rules.h ReceiveVerdict). */
export const ReceiveVerdict = {
  deliver: 0,
  /** §5.1.6.4.1: without GUEST_CSUM "the device MUST set flags to zero". */
  clearFlags: 1,
  dropNeedsCsum: 2,
  dropGsoNotAcked: 3,
  dropGsoUnknown: 4,
  dropEcnNotAcked: 5,
} as const;
export type ReceiveVerdict = (typeof ReceiveVerdict)[keyof typeof ReceiveVerdict];

/**
 * Whether the guest may receive a host frame with this header. §5.1.6.4.1: a gso_type only
 * when its GUEST_TSO4/TSO6/UFO feature was negotiated; the ECN bit only with GUEST_ECN; with no
 * GUEST_CSUM, flags zero (a partial checksum cannot be finished by the guest: dropped).
 */
export function receiveRule(features: bigint, flags: number, gsoType: number): ReceiveVerdict {
  const gso = gsoType & ~GSO_ECN & 0xff;
  if (gso !== GSO_NONE && gso !== GSO_TCPV4 && gso !== GSO_TCPV6 && gso !== GSO_UDP)
    return ReceiveVerdict.dropGsoUnknown;
  if (
    (gso === GSO_TCPV4 && !hasFeature(features, F.NET_F_GUEST_TSO4)) ||
    (gso === GSO_TCPV6 && !hasFeature(features, F.NET_F_GUEST_TSO6)) ||
    (gso === GSO_UDP && !hasFeature(features, F.NET_F_GUEST_UFO))
  )
    return ReceiveVerdict.dropGsoNotAcked;
  if (gsoType & GSO_ECN && (gso === GSO_NONE || !hasFeature(features, F.NET_F_GUEST_ECN)))
    return ReceiveVerdict.dropEcnNotAcked;
  if (!hasFeature(features, F.NET_F_GUEST_CSUM)) {
    if (flags & HDR_F_NEEDS_CSUM) return ReceiveVerdict.dropNeedsCsum;
    if (flags !== 0) return ReceiveVerdict.clearFlags;
  }
  return ReceiveVerdict.deliver;
}

/**
 * TUNSETOFFLOAD: what the TAP may hand us is what the guest negotiated to receive. Every
 * offload needs TUN_F_CSUM; the tun driver refuses TSO_ECN without TSO4 or TSO6 (EINVAL).
 */
export function tapOffloads(features: bigint): number {
  const has = (bit: bigint) => hasFeature(features, bit);
  if (!has(F.NET_F_GUEST_CSUM)) return 0;
  let off = TUN_F_CSUM;
  if (has(F.NET_F_GUEST_TSO4)) off |= TUN_F_TSO4;
  if (has(F.NET_F_GUEST_TSO6)) off |= TUN_F_TSO6;
  if ((has(F.NET_F_GUEST_TSO4) || has(F.NET_F_GUEST_TSO6)) && has(F.NET_F_GUEST_ECN)) off |= TUN_F_TSO_ECN;
  if (has(F.NET_F_GUEST_UFO)) off |= TUN_F_UFO;
  return off;
}

/** Whether a receiveq chain may take its part of a frame (native ChainVerdict). */
export const ChainVerdict = { take: 0, tooSmall: 1 } as const;
export type ChainVerdict = (typeof ChainVerdict)[keyof typeof ChainVerdict];

/**
 * Chain number `nth` of a frame of `frameLen` bytes (header included), `chainLen` writable
 * bytes. §5.1.6.3.1: without MRG_RXBUF each buffer holds a whole frame; with it the first
 * buffer must at least hold the header.
 */
export function receiveChainRule(
  features: bigint,
  hdrLen: number,
  chainLen: number,
  frameLen: number,
  nth: number,
): ChainVerdict {
  if (!hasFeature(features, F.NET_F_MRG_RXBUF) && chainLen < frameLen) return ChainVerdict.tooSmall;
  if (nth === 0 && chainLen < hdrLen) return ChainVerdict.tooSmall;
  return ChainVerdict.take;
}

/** Flow affinity learns a flow only from frames that really leave (not a disabled transmitq). */
export function recordsFlow(flowAffinity: boolean, transmitqEnabled: boolean): boolean {
  return flowAffinity && transmitqEnabled;
}
