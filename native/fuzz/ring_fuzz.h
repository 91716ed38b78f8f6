// The ring fuzz targets' body (fuzz_split_ring.cc, fuzz_packed_ring.cc): a ring of one layout
// over guest memory the input makes. Two adjacent regions (buffers may cross the edge), the
// ring's three areas placed anywhere (even misaligned or out of memory), any size, start
// positions and features from the input, then a sequence of driver writes (any bytes anywhere
// in guest memory: the driver races the device) and device steps (pop, fill, flush, notify,
// rewind, notification on or off, descriptor rewrites), with the dirty log on.
// Checked after every step: no crash, no access outside guest memory (ASan), every segment
// inside its region, chain lengths equal their segments, heads or buffer ids below the queue
// size, a chain's slots within the ring, packed positions within the ring, a broken ring pops
// nothing more.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdlib>
#include <vector>

#include "../vring.h"
#include "fuzz_check.h"

namespace vun {

constexpr uint64_t kFuzzRegion = 32 * 1024;
constexpr uint64_t kFuzzVa = 0x7f0000000000ull;

// One ring of either layout over memory the input makes, driven by the rest of the input.
inline int FuzzRing(const uint8_t* data, size_t size, bool packed) {
  FuzzedDataProvider in(data, size);
  std::vector<uint8_t> a(kFuzzRegion), b(kFuzzRegion), logBytes(64);
  GuestMemory mem;
  mem.regions.push_back(GuestRegion{0, kFuzzRegion, kFuzzVa, a.data()});
  mem.regions.push_back(GuestRegion{kFuzzRegion, kFuzzRegion, kFuzzVa + kFuzzRegion, b.data()});
  // Initial memory: a prefix of the input, the rest zero.
  std::vector<uint8_t> init = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, 4096));
  for (size_t i = 0; i < init.size(); i++) a[i] = init[i];

  RingConfig c;
  c.num = uint16_t(1u << in.ConsumeIntegralInRange<int>(0, 8));
  if (in.ConsumeBool()) c.num = in.ConsumeIntegral<uint16_t>();  // any size, power of 2 or not
  c.descVa = kFuzzVa + in.ConsumeIntegralInRange<uint64_t>(0, 2 * kFuzzRegion + 64);
  c.availVa = kFuzzVa + in.ConsumeIntegralInRange<uint64_t>(0, 2 * kFuzzRegion + 64);
  c.usedVa = kFuzzVa + in.ConsumeIntegralInRange<uint64_t>(0, 2 * kFuzzRegion + 64);
  c.eventIdx = in.ConsumeBool();
  c.indirect = in.ConsumeBool();
  c.notifyOnEmpty = in.ConsumeBool();
  if (packed) {
    c.packed = true;
    c.inOrderBatch = in.ConsumeBool();
  }
  c.logUsed = in.ConsumeBool();
  c.logGuestAddr = in.ConsumeIntegralInRange<uint64_t>(0, 4 * kFuzzRegion);

  Vring ring;
  ring.SetLogArea(LogArea{logBytes.data(), logBytes.size()});
  if (!ring.Attach(mem, c, in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint16_t>())) {
    Check(ring.Broken() && ring.Error() == kRingAddrInvalid, "a failed attach says why");
    return 0;
  }
  std::vector<Segment> segs(kBurstSegs);
  Element elems[kMaxBurst];
  uint32_t popped = 0;  // chains popped by the last pop and not filled yet
  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: {  // the driver writes a few bytes anywhere in guest memory
        uint64_t at = in.ConsumeIntegralInRange<uint64_t>(0, 2 * kFuzzRegion - 1);
        std::vector<uint8_t> bytes =
            in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 16));
        for (size_t i = 0; i < bytes.size() && at + i < 2 * kFuzzRegion; i++)
          (at + i < kFuzzRegion ? a[at + i] : b[at + i - kFuzzRegion]) = bytes[i];
        break;
      }
      case 1: {
        bool wasBroken = ring.Broken();
        uint32_t max = in.ConsumeIntegralInRange<uint32_t>(1, kMaxBurst);
        uint32_t n = ring.PopBurst(elems, max, segs.data());
        Check(n <= max, "no more chains than asked");
        Check(!wasBroken || n == 0, "a broken ring pops nothing");
        for (uint32_t i = 0; i < n; i++) {
          const Element& e = elems[i];
          Check(e.head < c.num, "heads (split) and buffer ids (packed) are in range");
          Check(e.slots >= 1 && e.slots <= c.num, "a chain takes 1 to N slots");
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
        if (packed) Check((ring.LastAvailIdx() & 0x7fff) < c.num, "next avail within the ring");
        popped = n;
        break;
      }
      case 2: {  // fill and flush what the last pop gave
        for (uint32_t i = 0; i < popped; i++)
          ring.Fill(elems[i].head, in.ConsumeIntegral<uint32_t>(), uint16_t(i), elems[i].slots);
        ring.Flush(uint16_t(popped));
        if (packed) Check((ring.UsedIdx() & 0x7fff) < c.num, "next used within the ring");
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
        if (c.num) {
          uint16_t i = in.ConsumeIntegral<uint16_t>();
          ring.NextOf(i);
          ring.RewriteDesc(i, uint8_t(in.ConsumeIntegralInRange<int>(0, 2)),
                           in.ConsumeIntegral<uint64_t>());
        }
        break;
    }
  }
  ring.Log().Sync();
  return 0;
}

}  // namespace vun
