// Fuzz target: the packed ring walk (packed_ring.h, through vring.h) over guest memory the
// input makes, IN_ORDER batching among the features; the body and its checks are in
// ring_fuzz.h.
#include "ring_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vun::FuzzRing(data, size, true);
}
