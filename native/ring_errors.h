// Driver violations a ring walk can find, and memory the front-end took away under a ring. The TS
// reference (src/virtio/ring-errors.ts) uses the same numbers; a test compares the two tables.
#pragma once

#include <cstdint>

namespace vun {

enum RingError : uint32_t {
  kRingOk = 0,
  kAvailIdxJump = 1,            // avail->idx more than the queue size ahead of lastAvailIdx
  kHeadOutOfRange = 2,          // avail ring entry >= queue size
  kNextOutOfRange = 3,          // desc.next >= table size
  kDescLoop = 4,                // chain longer than its table: a loop
  kIndirectBadLen = 5,          // indirect table length 0 or not a multiple of 16
  kIndirectNested = 6,          // INDIRECT inside an indirect table, or with NEXT
  kIndirectNotNegotiated = 7,   // INDIRECT flag without VIRTIO_RING_F_INDIRECT_DESC
  kAddrOutOfMemory = 8,         // [addr, addr+len) not entirely in guest memory
  kZeroLen = 9,                 // descriptor of length 0
  kReadableAfterWritable = 10,  // device-readable descriptor after a writable one
  kChainTooLong = 11,           // chain over 2^32 - 1 bytes
  kRingAddrInvalid = 12,        // desc/avail/used areas not mapped, or misaligned
  kTooManySegments = 13,        // more memory segments than one element can carry
  kMemoryFault = 14,            // guest memory gone under the ring (SIGBUS, memory_fault.h)
  kDescNotAvailable = 15,       // packed: a later descriptor of a chain not available (wrap)
  kBufferIdOutOfRange = 16,     // packed: buffer id >= queue size
  kRingErrorCount = 17,
};

inline const char* RingErrorName(uint32_t e) {
  static const char* const names[] = {
      "OK",
      "AVAIL_IDX_JUMP",
      "HEAD_OUT_OF_RANGE",
      "NEXT_OUT_OF_RANGE",
      "DESC_LOOP",
      "INDIRECT_BAD_LEN",
      "INDIRECT_NESTED",
      "INDIRECT_NOT_NEGOTIATED",
      "ADDR_OUT_OF_MEMORY",
      "ZERO_LEN",
      "READABLE_AFTER_WRITABLE",
      "CHAIN_TOO_LONG",
      "RING_ADDR_INVALID",
      "TOO_MANY_SEGMENTS",
      "MEMORY_FAULT",
      "DESC_NOT_AVAILABLE",
      "ID_OUT_OF_RANGE",
  };
  return e < kRingErrorCount ? names[e] : "UNKNOWN";
}

}  // namespace vun
