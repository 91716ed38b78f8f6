#include "steering.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace vun {

Steering::Steering(uint32_t pairs) : pairs_(pairs), flows_(new std::atomic<uint64_t>[kFlowSlots]) {
  for (uint32_t i = 0; i < kFlowSlots; i++) flows_[i].store(0, std::memory_order_relaxed);
  for (uint32_t p = 0; p < pairs; p++) wakeFd_.push_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
}

Steering::~Steering() {
  for (int fd : wakeFd_) close(fd);
  if (handover_) {
    for (size_t i = 0; i < size_t(pairs_) * pairs_; i++)
      delete handover_[i].load(std::memory_order_relaxed);
  }
}

void Steering::Configure(SteerPolicy policy, const uint8_t key[40], const uint16_t* table,
                         uint32_t size) {
  policy_ = policy;
  std::memcpy(rss_.key, key, 40);
  rss_.tableSize = size;
  for (uint32_t i = 0; i < size; i++) rss_.table[i] = table[i] < pairs_ ? table[i] : 0;
  // Room for several 64 KiB GSO frames per ring, less per ring when there are many pairs.
  if (policy != SteerPolicy::kNone && pairs_ > 1 && !handover_) {
    handoverBytes_ = pairs_ <= 8 ? (512u << 10) : pairs_ <= 16 ? (256u << 10) : (160u << 10);
    handover_.reset(new std::atomic<HandoverRing*>[size_t(pairs_) * pairs_]);
    for (size_t i = 0; i < size_t(pairs_) * pairs_; i++)
      handover_[i].store(nullptr, std::memory_order_relaxed);
  }
}

uint32_t Steering::Target(uint32_t pair, const uint8_t* frame, uint32_t len,
                          uint32_t hdrLen) const {
  if (policy_ == SteerPolicy::kNone || pairs_ == 1 || len <= hdrLen) return pair;
  uint8_t in[36];
  HashType t;
  size_t n = FlowInput(frame + hdrLen, len - hdrLen, in, &t);
  if (n == 0) return pair;
  uint32_t h = Toeplitz(rss_.key, sizeof(rss_.key), in, n);
  uint32_t target = rss_.table[h % rss_.tableSize];
  if (policy_ == SteerPolicy::kFlowAffinity) {
    uint64_t e = flows_[h % kFlowSlots].load(std::memory_order_relaxed);
    if ((e >> 32) == h) target = static_cast<uint32_t>(e & 0xffff);
  }
  // Relaxed: readiness only changes while the reading threads are stopped or about to stop.
  if (target >= pairs_ || !((ready_.load(std::memory_order_relaxed) >> target) & 1)) return pair;
  return target;
}

void Steering::RecordFlow(uint32_t pair, const Element& e, uint32_t hdrLen, uint8_t* scratch) {
  constexpr uint32_t kScratch = 128;  // enough for any header + L2 + L3 + L4 ports we hash
  uint32_t n = 0;
  for (uint32_t i = 0; i < e.outNum && n < kScratch; i++) {
    uint32_t take = std::min<uint32_t>(e.segs[i].len, kScratch - n);
    std::memcpy(scratch + n, e.segs[i].host, take);
    n += take;
  }
  if (n <= hdrLen) return;
  uint8_t in[36];
  HashType t;
  size_t len = FlowInput(scratch + hdrLen, n - hdrLen, in, &t);
  if (len == 0) return;
  ReverseFlowInput(in, len);
  uint32_t h = Toeplitz(rss_.key, sizeof(rss_.key), in, len);
  flows_[h % kFlowSlots].store((uint64_t(h) << 32) | pair, std::memory_order_relaxed);
}

HandoverRing* Steering::Ring(uint32_t src, uint32_t dst) const {
  return handover_ ? handover_[size_t(src) * pairs_ + dst].load(std::memory_order_acquire)
                   : nullptr;
}

HandoverRing* Steering::RingForProducer(uint32_t src, uint32_t dst) {
  if (!handover_) return nullptr;
  std::atomic<HandoverRing*>& slot = handover_[size_t(src) * pairs_ + dst];
  HandoverRing* r = slot.load(std::memory_order_relaxed);
  if (!r) {
    r = new HandoverRing(handoverBytes_);
    slot.store(r, std::memory_order_release);  // the ring is built before the target sees it
  }
  return r;
}

void Steering::SetReceiveReady(uint32_t pair, bool ready) {
  uint64_t bit = uint64_t(1) << pair;
  if (ready)
    ready_.fetch_or(bit, std::memory_order_relaxed);
  else
    ready_.fetch_and(~bit, std::memory_order_relaxed);
}

}  // namespace vun
