// Receive steering: which receiveq a frame from the host (or the loopback) takes, and the
// handover rings that carry it there when another pair's thread owns that receiveq.
// virtio 1.2 §5.1.6.5.5 leaves the choice to the device under MQ; we offer Toeplitz (RSS) and
// flow affinity (a flow's frames go to the pair whose transmitq it last used).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "byte_ring.h"
#include "ring_types.h"
#include "rss.h"

namespace vun {

enum class SteerPolicy : uint32_t { kNone = 0, kToeplitz = 1, kFlowAffinity = 2 };

// Frames for another pair's receiveq travel through a ByteRing (one per source pair and target
// pair, made by the source on first use), one record per frame.
using HandoverRing = ByteRing;

class Steering {
 public:
  explicit Steering(uint32_t pairs);
  ~Steering();
  Steering(const Steering&) = delete;
  Steering& operator=(const Steering&) = delete;

  // Only while every thread is stopped.
  void Configure(SteerPolicy policy, const uint8_t key[40], const uint16_t* table, uint32_t size);

  bool FlowAffinity() const { return policy_ == SteerPolicy::kFlowAffinity; }
  // The receiveq pair for a frame ([header][frame]) that arrived for `pair`: `pair` itself when
  // there is no policy, the frame is not IP, or the target's receiveq is not ready.
  uint32_t Target(uint32_t pair, const uint8_t* frame, uint32_t len, uint32_t hdrLen) const;
  // Flow affinity: remember that the flow of this transmitq chain was last sent on `pair`,
  // under the hash its replies will have. `scratch` holds at least 128 bytes.
  void RecordFlow(uint32_t pair, const Element& e, uint32_t hdrLen, uint8_t* scratch);

  // The ring from src to dst if src made it (acquire), or null.
  HandoverRing* Ring(uint32_t src, uint32_t dst) const;
  // The ring from src to dst, made on first use (only src's thread calls this).
  HandoverRing* RingForProducer(uint32_t src, uint32_t dst);
  // The eventfd that wakes the thread of `pair` when frames were handed to it.
  int WakeFd(uint32_t pair) const { return wakeFd_[pair]; }
  // Whether `pair`'s receiveq is started and enabled (a target steering may pick).
  void SetReceiveReady(uint32_t pair, bool ready);
  uint32_t pairs() const { return pairs_; }

 private:
  static constexpr uint32_t kFlowSlots = 4096;
  const uint32_t pairs_;
  SteerPolicy policy_ = SteerPolicy::kNone;
  RssConfig rss_;
  std::unique_ptr<std::atomic<uint64_t>[]> flows_;  // (hash << 32) | pair, direct-mapped
  // [src * pairs + dst], made by the source thread on first use (release), read by the target
  // (acquire); freed only with the device.
  std::unique_ptr<std::atomic<HandoverRing*>[]> handover_;
  uint32_t handoverBytes_ = 0;
  std::vector<int> wakeFd_;
  std::atomic<uint64_t> ready_{0};  // bit p: receiveq p started and enabled
};

}  // namespace vun
