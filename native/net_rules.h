// The virtio-net device rules the data path applies, as pure functions of the negotiated
// features. src/net/rules.ts states the same rules for the TS data path; test/net-rules.test.ts
// holds the two to each other and to known answers (the C++ side through the test surface).
#pragma once

#include <linux/if_tun.h>

#include <cstdint>

namespace vun {

// Virtio feature bit numbers the device rules look at (virtio 1.2 §5.1.3, §6).
constexpr int kFCsum = 0, kFGuestCsum = 1, kFGuestTso4 = 7, kFGuestTso6 = 8, kFGuestEcn = 9,
              kFGuestUfo = 10, kFMrgRxbuf = 15, kFNotifyOnEmpty = 24, kFIndirect = 28,
              kFEventIdx = 29, kFVersion1 = 32, kFRingPacked = 34, kFInOrder = 35,
              kFLogAll = 26;  // VHOST_F_LOG_ALL (vhost-user.rst "Migration")

// virtio-net header fields (virtio 1.2 §5.1.6).
constexpr uint8_t kHdrFNeedsCsum = 1, kHdrFDataValid = 2;
constexpr uint8_t kGsoNone = 0, kGsoTcpv4 = 1, kGsoUdp = 3, kGsoTcpv6 = 4, kGsoEcn = 0x80;

inline bool HasFeature(uint64_t features, int bit) {
  return (features >> bit) & 1;
}

// virtio 1.2 §5.1.6: the header has num_buffers with VERSION_1 or MRG_RXBUF, else 10 bytes.
inline uint32_t HeaderLen(uint64_t f) {
  return HasFeature(f, kFVersion1) || HasFeature(f, kFMrgRxbuf) ? 12 : 10;
}

// Where num_buffers sits in the header (bytes 10-11), or -1 when the header has none.
inline int NumBuffersOffset(uint32_t hdrLen) {
  return hdrLen == 12 ? 10 : -1;
}

// What the device does with a frame from the host, given its header and the guest's features.
enum ReceiveVerdict : uint32_t {
  kReceiveDeliver = 0,
  // Delivered with flags cleared: §5.1.6.4.1 "If VIRTIO_NET_F_GUEST_CSUM is not negotiated,
  // the device MUST set flags to zero" (AF_PACKET reports DATA_VALID whatever the guest took).
  kReceiveClearFlags = 1,
  kReceiveDropNeedsCsum = 2,    // NEEDS_CSUM without GUEST_CSUM: the guest cannot finish it
  kReceiveDropGsoNotAcked = 3,  // a GSO type whose GUEST_TSO4/TSO6/UFO the guest did not ack
  kReceiveDropGsoUnknown = 4,   // a GSO type this device does not pass (USO, undefined)
  kReceiveDropEcnNotAcked = 5,  // §5.1.6.4.1: ECN-marked GSO only with GUEST_ECN
};

// The host may hand us what the guest cannot take (AF_PACKET ignores the guest's offloads):
// §5.1.6.4.1 "If none of VIRTIO_NET_F_GUEST_TSO4, TSO6, UFO, USO options have been negotiated,
// the device MUST set gso_type to VIRTIO_NET_HDR_GSO_NONE"; likewise per type.
inline ReceiveVerdict ReceiveRule(uint64_t f, uint8_t flags, uint8_t gsoType) {
  const uint8_t gso = gsoType & ~kGsoEcn;
  if (gso != kGsoNone && gso != kGsoTcpv4 && gso != kGsoTcpv6 && gso != kGsoUdp)
    return kReceiveDropGsoUnknown;
  if ((gso == kGsoTcpv4 && !HasFeature(f, kFGuestTso4)) ||
      (gso == kGsoTcpv6 && !HasFeature(f, kFGuestTso6)) ||
      (gso == kGsoUdp && !HasFeature(f, kFGuestUfo)))
    return kReceiveDropGsoNotAcked;
  if ((gsoType & kGsoEcn) && (gso == kGsoNone || !HasFeature(f, kFGuestEcn)))
    return kReceiveDropEcnNotAcked;
  if (!HasFeature(f, kFGuestCsum)) {
    if (flags & kHdrFNeedsCsum) return kReceiveDropNeedsCsum;
    if (flags != 0) return kReceiveClearFlags;
  }
  return kReceiveDeliver;
}

// TUNSETOFFLOAD bits: what the TAP may hand us is what the guest negotiated to receive. The
// tun driver refuses TSO_ECN without TSO4 or TSO6 in the same call (EINVAL), and every
// offload needs TUN_F_CSUM.
inline unsigned TapOffloads(uint64_t f) {
  unsigned off = 0;
  if (!HasFeature(f, kFGuestCsum)) return 0;
  off |= TUN_F_CSUM;
  if (HasFeature(f, kFGuestTso4)) off |= TUN_F_TSO4;
  if (HasFeature(f, kFGuestTso6)) off |= TUN_F_TSO6;
  if ((HasFeature(f, kFGuestTso4) || HasFeature(f, kFGuestTso6)) && HasFeature(f, kFGuestEcn))
    off |= TUN_F_TSO_ECN;
  if (HasFeature(f, kFGuestUfo)) off |= TUN_F_UFO;
  return off;
}

// Whether a receiveq chain can take its part of a frame of `frameLen` bytes (header included)
// as chain number `nth` of that frame. §5.1.6.3.1: without MRG_RXBUF each buffer must hold the
// whole frame; with it, the first buffer must at least hold the header.
enum ChainVerdict : uint32_t { kChainTake = 0, kChainTooSmall = 1 };
inline ChainVerdict ReceiveChainRule(uint64_t f, uint32_t hdrLen, uint64_t chainLen,
                                     uint64_t frameLen, uint32_t nth) {
  if (!HasFeature(f, kFMrgRxbuf) && chainLen < frameLen) return kChainTooSmall;
  if (nth == 0 && chainLen < hdrLen) return kChainTooSmall;
  return kChainTake;
}

// Flow affinity (§5.1.6.5.5 lets the device choose): a flow is remembered only from frames
// that really leave, so a frame discarded on a disabled transmitq records nothing.
inline bool RecordsFlow(bool flowAffinity, bool transmitqEnabled) {
  return flowAffinity && transmitqEnabled;
}

}  // namespace vun
