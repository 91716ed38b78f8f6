// Where a packed ring is, kept outside the process: one record per vring in a file the backend
// maps shared (--ring-state), so a backend restarted after a crash resumes its packed rings
// where the dead one stopped. A packed ring keeps no used index in guest memory, and QEMU's net
// device does not ask for inflight tracking: after a crash it sends again the position it gave
// the dead backend. src/virtio/ring-journal.ts owns the file, decides at a start which position
// holds, and is the TS twin of the writes here.
//
// A flush writes its used descriptors' ids and lengths, then their flags, the first one's last
// (§2.8.11: the driver never sees part of a multi-buffer request). That last store commits the
// flush. Between the two, Begin records where the flush moves the used position, the slot that
// commits it and where every other used descriptor of the flush lies; after it, Commit makes
// the new position the committed one. So a record read after a crash at any instruction says:
// - nothing pending: the committed position holds;
// - pending, and the commit slot no longer shows the driver's available flags for its lap: the
//   flush was committed (the driver may since have made that slot available for the next lap,
//   never for the lap after: it cannot get a whole ring ahead of the device);
// - pending and not committed: every id and length is written and the driver has seen none of
//   it, so the restarted backend finishes the flush (the flags of the listed descriptors, the
//   commit slot's last) and goes on from the pending position. No buffer is used twice or lost.
#pragma once

#include <cstdint>

namespace vun {

// A record's layout (little endian); ring-journal.ts reads and writes the same.
struct RingJournal {
  static constexpr uint32_t kStride = 69632;  // bytes per vring: 64 + 2 * 32768, page-rounded
  uint32_t state;         // 0 empty, 1 running, 2 handed over (GET_VRING_BASE answered)
  uint32_t givenBase;     // SET_VRING_BASE as the front-end gave it when the ring started
  uint64_t descVa;        // the descriptor ring, as SET_VRING_ADDR gave it
  uint16_t num;           // the ring's size
  uint16_t innerCount;    // used descriptors of the pending flush besides the commit slot's
  uint16_t committed;     // the used position (position | wrap counter << 15) flushes reached
  uint16_t pending;       // the position the flush under way moves to
  uint16_t pendingHead;   // the commit slot (| its wrap counter << 15)
  uint16_t pendingValid;  // 1 from Begin to Commit
  uint32_t commits;       // flushes committed (for tests and status)
  uint8_t reserved[32];
  // Then, at byte 64: innerCount u16 offsets from the commit slot, in ring order (up to 32767).
  uint16_t* Inner() { return reinterpret_cast<uint16_t*>(reinterpret_cast<uint8_t*>(this) + 64); }

  // Before the first flags store. Atomic stores keep the compiler from moving them; the release
  // on pendingValid orders the list and positions before it, and the flags store-release that
  // follows orders pendingValid before the commit.
  void Begin(uint16_t newUsed, uint16_t head, const uint32_t* fillAt, uint32_t n) {
    uint16_t* inner = Inner();
    for (uint32_t k = 1; k < n; k++)
      __atomic_store_n(&inner[k - 1], static_cast<uint16_t>(fillAt[k]), __ATOMIC_RELAXED);
    __atomic_store_n(&innerCount, static_cast<uint16_t>(n - 1), __ATOMIC_RELAXED);
    __atomic_store_n(&pending, newUsed, __ATOMIC_RELAXED);
    __atomic_store_n(&pendingHead, head, __ATOMIC_RELAXED);
    __atomic_store_n(&pendingValid, uint16_t{1}, __ATOMIC_RELEASE);
  }
  // After the commit store. Release: committed is stored before pendingValid is cleared, so no
  // instruction boundary leaves neither field naming the flushed position.
  void Commit(uint16_t newUsed) {
    __atomic_store_n(&committed, newUsed, __ATOMIC_RELAXED);
    __atomic_store_n(&pendingValid, uint16_t{0}, __ATOMIC_RELEASE);
    __atomic_store_n(&commits, commits + 1, __ATOMIC_RELAXED);
  }
};
static_assert(sizeof(RingJournal) == 64, "a journal record's list starts at byte 64");

}  // namespace vun
