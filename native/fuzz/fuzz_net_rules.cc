// Fuzz target: the virtio-net device rules (net_rules.h) over any features, header bytes and
// lengths: the header size, where num_buffers lives, which received headers a guest may get,
// TAP offloads, whether a chain may take (part of) a frame. Checked: num_buffers lies inside
// the header, verdicts are one of their values, a chain too short for the header is never
// taken for a frame's first part.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdio>
#include <cstdlib>

#include "../net_rules.h"
#include "fuzz_check.h"

using namespace vun;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  while (in.remaining_bytes() > 0) {
    uint64_t f = in.ConsumeIntegral<uint64_t>();
    uint32_t hdr = HeaderLen(f);
    Check(hdr == 10 || hdr == 12, "header is 10 or 12 bytes");
    int nb = NumBuffersOffset(hdr);
    Check(nb < 0 || uint32_t(nb) + 2 <= hdr, "num_buffers inside the header");
    const uint8_t flags = in.ConsumeIntegral<uint8_t>();
    ReceiveVerdict v = ReceiveRule(f, flags, in.ConsumeIntegral<uint8_t>());
    Check(v <= kReceiveDropEcnNotAcked, "a known receive verdict");
    // §5.1.6.4.1: without GUEST_CSUM the guest never gets flags.
    if (v == kReceiveDeliver && !HasFeature(f, kFGuestCsum))
      Check(flags == 0, "flags only with GUEST_CSUM");
    const unsigned off = TapOffloads(f);
    if (off & TUN_F_TSO_ECN)
      Check(off & (TUN_F_TSO4 | TUN_F_TSO6), "TSO_ECN only with TSO4 or TSO6");
    uint64_t chain = in.ConsumeIntegral<uint64_t>();
    uint64_t len = in.ConsumeIntegral<uint32_t>();
    uint32_t taken = in.ConsumeIntegralInRange<uint32_t>(0, 3);
    ChainVerdict c = ReceiveChainRule(f, hdr, chain, len, taken);
    if (taken == 0 && chain < hdr)
      Check(c != kChainTake, "a chain shorter than the header is refused");
    if (!HasFeature(f, kFMrgRxbuf) && chain < len)
      Check(c != kChainTake, "without MRG_RXBUF the chain holds it all");
    RecordsFlow(in.ConsumeBool(), in.ConsumeBool());
  }
  return 0;
}
