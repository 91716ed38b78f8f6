// Guest memory as the data path sees it: a table of regions, each with its guest physical
// address (GPA), the front-end's virtual address (VA) and where it is mapped here. Every
// translation checks the whole [addr, addr+len) range; a buffer that crosses a region edge is
// split into one segment per region (rust-vmm vm-memory's lesson: accesses may cross edges).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vun {

struct GuestRegion {
  uint64_t gpa;
  uint64_t size;
  uint64_t va;
  uint8_t* host;
};

// One piece of a guest buffer that lies inside a single region.
struct Segment {
  uint64_t gpa;
  uint32_t len;
  uint8_t* host;
};

class GuestMemory {
 public:
  std::vector<GuestRegion> regions;

  const GuestRegion* FindGpa(uint64_t gpa) const {
    for (const GuestRegion& r : regions)
      if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
    return nullptr;
  }

  // Host pointer for front-end VA range [va, va+len), which must lie in one region.
  uint8_t* VaToHost(uint64_t va, uint64_t len) const {
    for (const GuestRegion& r : regions) {
      if (va >= r.va && va - r.va < r.size && len <= r.size - (va - r.va))
        return r.host + (va - r.va);
    }
    return nullptr;
  }

  // The guest physical address of front-end VA `va` (the dirty log speaks GPAs), or 0.
  uint64_t VaToGpa(uint64_t va) const {
    for (const GuestRegion& r : regions)
      if (va >= r.va && va - r.va < r.size) return r.gpa + (va - r.va);
    return 0;
  }

  // Host pointer for GPA range [gpa, gpa+len) within one region, or null.
  uint8_t* GpaToHostContiguous(uint64_t gpa, uint64_t len) const {
    const GuestRegion* r = FindGpa(gpa);
    if (!r || len > r->size - (gpa - r->gpa)) return nullptr;
    return r->host + (gpa - r->gpa);
  }

  // Appends the segments of [gpa, gpa+len) to out[*n..max). Returns false when part of the
  // range is outside guest memory (out-of-memory) or there is no room (*tooMany set).
  bool Split(uint64_t gpa, uint64_t len, Segment* out, uint32_t* n, uint32_t max,
             bool* tooMany) const {
    if (len > UINT64_MAX - gpa) return false;
    while (len > 0) {
      const GuestRegion* r = FindGpa(gpa);
      if (!r) return false;
      uint64_t off = gpa - r->gpa;
      uint64_t chunk = r->size - off < len ? r->size - off : len;
      if (*n >= max) {
        *tooMany = true;
        return false;
      }
      out[(*n)++] = Segment{gpa, static_cast<uint32_t>(chunk), r->host + off};
      gpa += chunk;
      len -= chunk;
    }
    return true;
  }
};

}  // namespace vun
