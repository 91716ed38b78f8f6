// The rule every descriptor of a chain is held to, split or packed alike: one buffer element
// (addr, len, writable) added to the chain's element, or the error that breaks the ring.
#pragma once

#include <cstdint>

#include "guest_memory.h"
#include "ring_errors.h"
#include "ring_types.h"

namespace vun {

// Adds one buffer to `e` (its segments in e->segs, `*nsegs` of them so far). Checked in this
// order: zero length, readable after writable, the chain's 4 GiB, guest memory.
inline uint32_t AddDescriptor(const GuestMemory& mem, Element* e, uint64_t addr, uint32_t len,
                              bool writable, bool* sawWritable, uint32_t* nsegs) {
  if (len == 0) return kZeroLen;
  // §2.7.4.2 (split) and §2.8.13.2 (packed): "The driver MUST place any device-writable
  // descriptor elements after any device-readable descriptor elements."
  if (!writable && *sawWritable) return kReadableAfterWritable;
  *sawWritable |= writable;
  (writable ? e->inLen : e->outLen) += len;
  if (e->inLen + e->outLen > 0xffffffffull) return kChainTooLong;
  bool tooMany = false;
  if (!mem.Split(addr, len, e->segs, nsegs, kMaxChainSegs, &tooMany))
    return tooMany ? kTooManySegments : kAddrOutOfMemory;
  if (writable)
    e->inNum = *nsegs - e->outNum;
  else
    e->outNum = *nsegs;
  return kRingOk;
}

}  // namespace vun
