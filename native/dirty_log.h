// The dirty page log of live migration (vhost-user.rst "Migration"): one bit per 4 KiB guest
// page, in a shared memory area the front-end gives with SET_LOG_BASE. While VHOST_F_LOG_ALL
// is acked, every guest page the device writes is marked: receive buffers always, the used
// ring when its vring asked for it (VHOST_VRING_F_LOG in SET_VRING_ADDR, at log_guest_addr).
// The front-end reads and clears bits (atomically) while we run and copies those pages again.
//
// Each ring keeps a small cache of the bytes it touched in a burst and ORs them into the
// shared log at the end of the burst (DPDK's log cache does the same with words). The TS
// reference (src/virtio/dirty-log.ts) marks each write at once; both leave the same bits.
#pragma once

#include <cstdint>

namespace vun {

// vhost-user.rst: "Dirty pages are of size VHOST_LOG_PAGE = 0x1000 (4KB)".
constexpr uint64_t kLogPage = 0x1000;

// The shared log as mapped here: null when off.
struct LogArea {
  uint8_t* base = nullptr;
  uint64_t size = 0;  // bytes
};

class DirtyLog {
 public:
  LogArea area;

  bool On() const { return area.base != nullptr; }

  // Marks the pages of guest physical range [gpa, gpa+len). Call after the bytes are written:
  // a page marked before its write lands could be copied and cleared before the data is there.
  void Mark(uint64_t gpa, uint64_t len) {
    if (!area.base || len == 0 || len - 1 > UINT64_MAX - gpa) return;
    uint64_t first = gpa / kLogPage, last = (gpa + len - 1) / kLogPage;
    for (uint64_t page = first; page <= last; page++) Add(page / 8, uint8_t(1u << (page % 8)));
  }

  // ORs the cached bytes into the shared log. The release orders every guest write made
  // before (buffers, used entries, used->idx) before the bits that announce them: the
  // front-end clears a bit, then copies the page, so it must never see the bit first.
  void Sync() {
    for (uint32_t i = 0; i < n_; i++)
      __atomic_fetch_or(area.base + cache_[i].byte, cache_[i].bits, __ATOMIC_RELEASE);
    n_ = 0;
  }

 private:
  struct Entry {
    uint64_t byte;
    uint8_t bits;
  };
  static constexpr uint32_t kCache = 64;
  Entry cache_[kCache];
  uint32_t n_ = 0;

  void Add(uint64_t byte, uint8_t bit) {
    // A page beyond the log is not marked (vhost-user.rst: the log covers every guest address
    // the front-end knows; DPDK ignores the rest the same way).
    if (byte >= area.size) return;
    for (uint32_t i = n_; i-- > 0;) {
      if (cache_[i].byte == byte) {
        cache_[i].bits |= bit;
        return;
      }
    }
    if (n_ == kCache) Sync();
    cache_[n_++] = Entry{byte, bit};
  }
};

}  // namespace vun
