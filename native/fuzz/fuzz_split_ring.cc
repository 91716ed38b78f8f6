// Fuzz target: the split ring walk (split_ring.h, through vring.h) over guest memory the input
// makes; the body and its checks are in ring_fuzz.h.
#include "ring_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vun::FuzzRing(data, size, false);
}
