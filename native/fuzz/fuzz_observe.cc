// Fuzz target: the observation record encoder (observe.h, byte_ring.h) that capture and the
// ring trace read. A per-vring ring of any size, records of every type with any lengths (frames
// cut at any snap length, chains of up to 300 descriptors), drained at any moment. Checked:
// every drained record has the common header, our vring, a known type and exactly the length
// its type says (src/trace/observe.ts decodes by these lengths); a full ring drops and counts.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../observe.h"
#include "fuzz_check.h"

using namespace vun;

namespace {
struct Part {
  const uint8_t* host;
  uint32_t len;
};

void CheckRecord(const uint8_t* r, uint32_t len, uint16_t vring) {
  Check(len >= kObsHeader, "a record has its header");
  uint16_t type, v;
  std::memcpy(&type, r, 2);
  std::memcpy(&v, r + 2, 2);
  Check(v == vring, "the record names its vring");
  const uint8_t* b = r + kObsHeader;
  const uint32_t body = len - kObsHeader;
  switch (type) {
    case kObsFrame: {
      Check(body >= 8, "frame record head");
      uint32_t origLen;
      uint16_t hdrLen;
      std::memcpy(&origLen, b, 4);
      std::memcpy(&hdrLen, b + 4, 2);
      Check(b[7] <= 8, "at most 8 fault rules");
      Check(body >= 8u + hdrLen + 2u * b[7], "frame record holds its header and rules");
      Check(body - 8 - hdrLen - 2 * b[7] <= origLen, "no more frame bytes than the frame had");
      break;
    }
    case kObsAvail:
    case kObsFlush:
    case kObsKicks:
      Check(body == 4, "4-byte body");
      break;
    case kObsChain: {
      Check(body >= 24, "chain record head");
      uint16_t n;
      std::memcpy(&n, b + 2, 2);
      Check(n <= kObsMaxDescs && body == 24u + 24u * n, "chain record length");
      break;
    }
    case kObsUsed:
    case kObsNotify:
      Check(body == 12, "12-byte body");
      break;
    case kObsFault:
      Check(body == 32, "32-byte body");
      break;
    default:
      Check(false, "a known record type");
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const uint16_t vring = in.ConsumeIntegral<uint16_t>();
  VringObserver o(vring, in.ConsumeIntegralInRange<uint32_t>(16, 1 << 16), true, true,
                  in.ConsumeIntegralInRange<uint32_t>(0, 4096), true);
  std::vector<uint8_t> payload(70000, 0xab);
  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
      case 0: {
        uint32_t hdr = in.ConsumeBool() ? 12 : 10;
        uint64_t total = in.ConsumeIntegralInRange<uint64_t>(0, 66000);
        // Up to 4 parts that add up to the total (a chain's segments).
        Part parts[4];
        uint32_t np = 0;
        uint64_t left = total;
        while (left && np < 4) {
          uint32_t n =
              np == 3 ? uint32_t(left) : in.ConsumeIntegralInRange<uint32_t>(1, uint32_t(left));
          parts[np++] = Part{payload.data(), n};
          left -= n;
        }
        uint16_t rules[8] = {};
        uint32_t nrules = in.ConsumeIntegralInRange<uint32_t>(0, 10);
        uint8_t hdrOverride[12] = {};
        o.Frame(in.ConsumeIntegralInRange<uint8_t>(0, 1), hdr, total, parts, np,
                in.ConsumeBool() ? hdrOverride : nullptr, rules, nrules);
        break;
      }
      case 1:
        o.Avail(in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint16_t>());
        break;
      case 2:
        for (int k = in.ConsumeIntegralInRange<int>(0, 300); k > 0; k--)
          o.Desc(in.ConsumeIntegral<uint64_t>(), in.ConsumeIntegral<uint32_t>(), 0, 0, false);
        break;
      case 3:
        o.Chain(in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint32_t>(), 0, 0);
        break;
      case 4:
        o.Used(in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint32_t>(),
               in.ConsumeIntegral<uint32_t>());
        break;
      case 5:
        o.Flush(in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint16_t>());
        break;
      case 6:
        o.Notify(in.ConsumeBool(), NotifyWhy(in.ConsumeIntegralInRange<int>(0, 3)),
                 in.ConsumeBool(), 1, 2, 3, 4);
        break;
      case 7:
        o.Fault(in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint8_t>(),
                in.ConsumeIntegral<uint8_t>(), in.ConsumeIntegral<uint32_t>(), 1, 2, 3);
        break;
      case 8:
        o.Kicks(in.ConsumeBool(), static_cast<KicksMode>(in.ConsumeIntegralInRange<int>(0, 3)),
                in.ConsumeIntegral<uint16_t>());
        break;
      case 9:
        o.ring.Drain([&](const uint8_t* r, uint32_t len) {
          CheckRecord(r, len, vring);
          return true;
        });
        break;
    }
  }
  o.ring.Drain([&](const uint8_t* r, uint32_t len) {
    CheckRecord(r, len, vring);
    return true;
  });
  return 0;
}
