// A single-producer single-consumer ring of variable-length records, used for frames handed
// to another pair's receiveq and for observation records (capture, ring trace) that JS drains.
// Records are [u32 len][u32 spare][len bytes] padded to 8; a record that would not fit before
// the end leaves a wrap marker and starts again at 0.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

namespace vun {

class ByteRing {
 public:
  static constexpr uint32_t kWrap = 0xffffffffu;
  explicit ByteRing(uint32_t bytes) : cap_((bytes + 7) & ~7u), buf_(cap_) {}
  uint32_t capacity() const { return cap_; }

  // Producer only: room for a record of `len` bytes, or null (counted in `lost`) when the
  // consumer has not made room. Commit() publishes it; a reservation not committed is dropped.
  uint8_t* Reserve(uint32_t len) {
    const uint32_t need = 8 + ((len + 7) & ~7u);
    if (need > cap_) {
      lost.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    uint64_t h = head_.load(std::memory_order_relaxed);
    // Acquire: the consumer is done with the bytes it released before we overwrite them.
    const uint64_t t = tail_.load(std::memory_order_acquire);
    uint32_t pos = static_cast<uint32_t>(h % cap_);
    const uint32_t skip = cap_ - pos < need ? cap_ - pos : 0;
    if (h + skip + need - t > cap_) {
      lost.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    if (skip) {
      std::memcpy(&buf_[pos], &kWrap, 4);
      h += skip;
      pos = 0;
    }
    std::memcpy(&buf_[pos], &len, 4);
    pending_ = h + need;
    return &buf_[pos + 8];
  }
  void Commit() {
    // Release: the record's bytes are visible before the consumer sees the new head.
    head_.store(pending_, std::memory_order_release);
  }

  bool Push(const uint8_t* data, uint32_t len) {
    uint8_t* p = Reserve(len);
    if (!p) return false;
    std::memcpy(p, data, len);
    Commit();
    return true;
  }

  // Consumer only: hands each waiting record to `take` until it returns false (kept).
  template <typename F>
  bool Drain(F take) {
    uint64_t t = tail_.load(std::memory_order_relaxed);
    // Acquire: the records published before this head are complete.
    const uint64_t h = head_.load(std::memory_order_acquire);
    bool all = true;
    while (t != h) {
      const uint32_t pos = static_cast<uint32_t>(t % cap_);
      uint32_t len;
      std::memcpy(&len, &buf_[pos], 4);
      if (len == kWrap) {
        t += cap_ - pos;
        continue;
      }
      if (!take(&buf_[pos + 8], len)) {
        all = false;
        break;
      }
      t += 8 + ((len + 7) & ~7u);
    }
    // Release: we are done reading these records before the producer may reuse their bytes.
    tail_.store(t, std::memory_order_release);
    return all;
  }

  // Records the producer could not place (the consumer fell behind).
  std::atomic<uint64_t> lost{0};

 private:
  const uint32_t cap_;  // a multiple of 8
  std::vector<uint8_t> buf_;
  std::atomic<uint64_t> head_{0};  // bytes ever written (producer)
  std::atomic<uint64_t> tail_{0};  // bytes ever consumed (consumer)
  uint64_t pending_ = 0;           // producer only: head after the reserved record
};

}  // namespace vun
