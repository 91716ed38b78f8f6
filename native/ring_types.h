// What both ring layouts share: descriptor flags, burst limits, the chain a pop returns and the
// configuration a ring starts with. The split ring (split_ring.h, virtio 1.2 §2.7) and the
// packed ring (packed_ring.h, §2.8) implement one batch API over them; vring.h picks one per
// vring. src/virtio/ring-types.ts is the TS side of this file.
#pragma once

#include <cstdint>

#include "guest_memory.h"
#include "ring_journal.h"

namespace vun {

constexpr uint16_t kDescFNext = 1;
constexpr uint16_t kDescFWrite = 2;
constexpr uint16_t kDescFIndirect = 4;
// Segments one chain may use (libvhost-user's VIRTQUEUE_MAX_SIZE), and per burst.
constexpr uint32_t kMaxChainSegs = 1024;
constexpr uint32_t kBurstSegs = 4096;
constexpr uint32_t kMaxBurst = 64;

// One popped chain: readable segments first (outNum), then writable ones (inNum).
struct Element {
  uint16_t head;   // split: the head descriptor's index; packed: the buffer id
  uint16_t slots;  // packed: descriptor ring slots the chain took; split: 1
  uint32_t outNum, inNum;
  uint64_t outLen, inLen;
  Segment* segs;
};

struct RingConfig {
  uint16_t num = 0;
  // Split: descriptor table, available ring, used ring. Packed: descriptor ring, driver event
  // suppression (driver area), device event suppression (device area).
  uint64_t descVa = 0, availVa = 0, usedVa = 0;
  bool packed = false;  // VIRTIO_F_RING_PACKED
  // VIRTIO_F_IN_ORDER (§2.7.9, §2.8.9): a flush publishes one used element for the batch, with
  // the id of its last buffer (the transmitq: nothing written, buffers used in order).
  bool inOrderBatch = false;
  bool eventIdx = false;
  bool indirect = false;
  bool notifyOnEmpty = false;
  // VHOST_VRING_F_LOG: ring writes are logged while the dirty log is on (split: at this guest
  // physical address, SET_VRING_ADDR's log_guest_addr; packed: where they land).
  bool logUsed = false;
  uint64_t logGuestAddr = 0;
  // --ring-state: where a packed ring keeps its position outside the process (ring_journal.h);
  // null: nowhere. Split rings have used->idx in guest memory and take none.
  RingJournal* journal = nullptr;
};

}  // namespace vun
