// Fuzz target: guest memory translation (guest_memory.h) across region edges. Regions from
// the input (up to 4, any addresses, adjacent or not), then queries: Split of [gpa, gpa+len),
// VaToHost, GpaToHostContiguous, VaToGpa. Checked: a successful split covers exactly the range
// with segments each inside one region and contiguous in guest addresses; every pointer handed
// out lies inside its region with the asked length.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../guest_memory.h"
#include "fuzz_check.h"

using namespace vun;

namespace {
bool Inside(const GuestMemory& m, const uint8_t* p, uint64_t len) {
  for (const GuestRegion& r : m.regions)
    if (p >= r.host && uint64_t(p - r.host) <= r.size && len <= r.size - uint64_t(p - r.host))
      return true;
  return false;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<std::vector<uint8_t>> backing;
  GuestMemory mem;
  int n = in.ConsumeIntegralInRange<int>(1, 4);
  uint64_t gpa = in.ConsumeIntegral<uint64_t>() & ~0xfffull;
  // The session refuses overlapping regions (memory-table.ts): front-end addresses follow the
  // guest addresses at one offset, so neither overlaps.
  const uint64_t delta = in.ConsumeIntegral<uint64_t>();
  for (int i = 0; i < n; i++) {
    uint64_t len = in.ConsumeIntegralInRange<uint64_t>(1, 8192);
    if (len > UINT64_MAX - gpa) break;
    const uint64_t va = gpa + delta;
    if (va < gpa || len > UINT64_MAX - va) break;  // front-end range would wrap
    backing.emplace_back(len);
    mem.regions.push_back(GuestRegion{gpa, len, va, backing.back().data()});
    // Next region: adjacent (a buffer may cross the edge) or after a hole.
    uint64_t gap = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<uint64_t>(1, 4096);
    if (len + gap > UINT64_MAX - gpa) break;
    gpa += len + gap;
  }
  if (mem.regions.empty()) return 0;
  const uint64_t base = mem.regions.front().gpa;
  while (in.remaining_bytes() > 0) {
    uint64_t q = in.ConsumeBool() ? base + in.ConsumeIntegralInRange<uint64_t>(0, 40000)
                                  : in.ConsumeIntegral<uint64_t>();
    uint64_t len = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 20000)
                                    : in.ConsumeIntegral<uint64_t>();
    Segment segs[8];
    uint32_t ns = 0;
    bool tooMany = false;
    if (mem.Split(q, len, segs, &ns, 8, &tooMany)) {
      uint64_t at = q, total = 0;
      for (uint32_t i = 0; i < ns; i++) {
        Check(segs[i].gpa == at, "segments are contiguous");
        Check(Inside(mem, segs[i].host, segs[i].len), "segment inside a region");
        const GuestRegion* r = mem.FindGpa(segs[i].gpa);
        Check(r && segs[i].host == r->host + (segs[i].gpa - r->gpa), "segment maps its address");
        at += segs[i].len;
        total += segs[i].len;
      }
      Check(total == len, "the split covers the range");
    }
    if (const uint8_t* p = mem.GpaToHostContiguous(q, len))
      Check(Inside(mem, p, len), "contiguous GPA view");
    uint64_t va = in.ConsumeIntegral<uint64_t>();
    if (const uint8_t* p = mem.VaToHost(va, len)) {
      Check(Inside(mem, p, len), "VA view inside a region");
      uint64_t g = mem.VaToGpa(va);
      const GuestRegion* r = mem.FindGpa(g);
      Check(r && r->host + (g - r->gpa) == p, "VA and GPA name the same byte");
    }
  }
  return 0;
}
