// Fuzz target: the packed ring walk (packed_ring.h) over guest memory the input makes. Two
// adjacent regions (buffers may cross the edge), the descriptor ring and both event areas placed
// anywhere (even misaligned or out of memory), any size, positions and wrap counters, features
// (IN_ORDER batching among them) from the input, then a sequence of driver writes (any bytes
// anywhere in guest memory: the driver races the device) and device steps (pop, fill, flush,
// notify, rewind, notification on or off, descriptor rewrites), with the dirty log on.
// Checked after every step: no crash, no access outside guest memory (ASan), every segment
// inside its region, chain lengths equal their segments, buffer ids below the queue size, a
// list's slots within the ring, positions within the ring, a broken ring pops nothing more.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdlib>
#include <vector>

#include "../packed_ring.h"
#include "fuzz_check.h"

using namespace vun;

namespace {
constexpr uint64_t kRegion = 32 * 1024;
constexpr uint64_t kVa = 0x7f0000000000ull;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<uint8_t> a(kRegion), b(kRegion), logBytes(64);
  GuestMemory mem;
  mem.regions.push_back(GuestRegion{0, kRegion, kVa, a.data()});
  mem.regions.push_back(GuestRegion{kRegion, kRegion, kVa + kRegion, b.data()});
  // Initial memory: a prefix of the input, the rest zero.
  std::vector<uint8_t> init = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, 4096));
  for (size_t i = 0; i < init.size(); i++) a[i] = init[i];

  RingConfig c;
  c.num = uint16_t(1u << in.ConsumeIntegralInRange<int>(0, 8));
  if (in.ConsumeBool()) c.num = in.ConsumeIntegral<uint16_t>();  // any size, power of 2 or not
  c.descVa = kVa + in.ConsumeIntegralInRange<uint64_t>(0, 2 * kRegion + 64);
  c.availVa = kVa + in.ConsumeIntegralInRange<uint64_t>(0, 2 * kRegion + 64);
  c.usedVa = kVa + in.ConsumeIntegralInRange<uint64_t>(0, 2 * kRegion + 64);
  c.eventIdx = in.ConsumeBool();
  c.indirect = in.ConsumeBool();
  c.notifyOnEmpty = in.ConsumeBool();
  c.packed = true;
  c.inOrderBatch = in.ConsumeBool();
  c.logUsed = in.ConsumeBool();
  c.logGuestAddr = in.ConsumeIntegralInRange<uint64_t>(0, 4 * kRegion);

  PackedRing ring;
  ring.log.area = LogArea{logBytes.data(), logBytes.size()};
  if (!ring.Attach(mem, c, in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint16_t>())) {
    Check(ring.broken && ring.error == kRingAddrInvalid, "a failed attach says why");
    return 0;
  }
  std::vector<Segment> segs(kBurstSegs);
  Element elems[kMaxBurst];
  uint32_t popped = 0;  // chains popped by the last pop and not filled yet
  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: {  // the driver writes a few bytes anywhere in guest memory
        uint64_t at = in.ConsumeIntegralInRange<uint64_t>(0, 2 * kRegion - 1);
        std::vector<uint8_t> bytes =
            in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 16));
        for (size_t i = 0; i < bytes.size() && at + i < 2 * kRegion; i++)
          (at + i < kRegion ? a[at + i] : b[at + i - kRegion]) = bytes[i];
        break;
      }
      case 1: {
        bool wasBroken = ring.broken;
        uint32_t max = in.ConsumeIntegralInRange<uint32_t>(1, kMaxBurst);
        uint32_t n = ring.PopBurst(elems, max, segs.data());
        Check(n <= max, "no more chains than asked");
        Check(!wasBroken || n == 0, "a broken ring pops nothing");
        for (uint32_t i = 0; i < n; i++) {
          const Element& e = elems[i];
          Check(e.head < ring.cfg.num, "buffer ids are in range");
          Check(e.slots >= 1 && e.slots <= ring.cfg.num, "a list takes 1 to N slots");
          uint64_t out = 0, inl = 0;
          for (uint32_t k = 0; k < e.outNum + e.inNum; k++) {
            const Segment& s = e.segs[k];
            const GuestRegion* r = mem.FindGpa(s.gpa);
            Check(r != nullptr, "segment in guest memory");
            Check(s.len <= r->size - (s.gpa - r->gpa), "segment inside its region");
            Check(s.host == r->host + (s.gpa - r->gpa), "segment host address");
            (k < e.outNum ? out : inl) += s.len;
          }
          Check(out == e.outLen && inl == e.inLen, "chain lengths add up");
          // The device writes what it may into the writable part (a receive copy).
          for (uint32_t k = e.outNum; k < e.outNum + e.inNum; k++) e.segs[k].host[0] ^= 0x5a;
        }
        Check((ring.LastAvailIdx() & 0x7fff) < ring.cfg.num, "next avail within the ring");
        popped = n;
        break;
      }
      case 2: {  // fill and flush what the last pop gave
        for (uint32_t i = 0; i < popped; i++)
          ring.Fill(elems[i].head, in.ConsumeIntegral<uint32_t>(), uint16_t(i), elems[i].slots);
        ring.Flush(uint16_t(popped));
        Check((ring.UsedIdx() & 0x7fff) < ring.cfg.num, "next used within the ring");
        popped = 0;
        break;
      }
      case 3:
        ring.NeedNotify();
        break;
      case 4:
        if (popped) ring.Rewind(uint16_t(popped));
        popped = 0;
        break;
      case 5:
        ring.SetNotification(in.ConsumeBool());
        break;
      case 6:
        ring.Empty();
        break;
      case 7:
        if (ring.cfg.num) {
          uint16_t i = in.ConsumeIntegral<uint16_t>();
          ring.NextOf(i);
          ring.RewriteDesc(i, uint8_t(in.ConsumeIntegralInRange<int>(0, 2)),
                           in.ConsumeIntegral<uint64_t>());
        }
        break;
    }
  }
  ring.log.Sync();
  return 0;
}
