// Frames the fault plan holds back (delay, rate, reorder) until their release: a time-ordered
// queue per direction of a queue pair. Only the pair's thread touches it. A frame is released
// when its time comes, or (reorder) once `gap` later frames went past it, whichever is first.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace vun {

class FrameHold {
 public:
  // netem's default queue limit: beyond it a held frame is dropped (the caller counts it).
  static constexpr size_t kLimit = 1000;
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

  struct Frame {
    int64_t releaseNs;  // CLOCK_MONOTONIC
    uint64_t seq;       // arrival order: equal times leave in it
    int32_t gap;        // reorder: later frames still to pass it; -1: time only
    std::vector<uint8_t> bytes;
  };

  size_t size() const { return frames_.size(); }

  // Holds a copy of frame[0..len) until releaseNs (and, gap >= 0, until `gap` frames passed).
  bool Push(int64_t releaseNs, int32_t gap, const uint8_t* frame, uint32_t len) {
    if (frames_.size() >= kLimit) return false;
    Frame f{releaseNs, seq_++, gap, std::vector<uint8_t>(frame, frame + len)};
    frames_.push_back(std::move(f));
    std::push_heap(frames_.begin(), frames_.end(), Later);
    return true;
  }

  // A frame went past the held ones (reorder): each waiting for a gap is one frame closer.
  void Passed() {
    bool changed = false;
    for (Frame& f : frames_) {
      if (f.gap > 0 && --f.gap == 0) {
        f.releaseNs = 0;  // due now
        changed = true;
      }
    }
    if (changed) std::make_heap(frames_.begin(), frames_.end(), Later);
  }

  int64_t NextNs() const { return frames_.empty() ? kNever : frames_.front().releaseNs; }

  // Hands each frame due at `now` to fn(bytes, len), earliest first; fn returns false to keep
  // the frame (no room for it yet) and stop.
  template <class F>
  void Release(int64_t now, F&& fn) {
    while (!frames_.empty() && frames_.front().releaseNs <= now) {
      Frame& f = frames_.front();
      if (!fn(f.bytes.data(), static_cast<uint32_t>(f.bytes.size()))) return;
      std::pop_heap(frames_.begin(), frames_.end(), Later);
      frames_.pop_back();
    }
  }

  void Clear() { frames_.clear(); }

 private:
  static bool Later(const Frame& a, const Frame& b) {
    return a.releaseNs != b.releaseNs ? a.releaseNs > b.releaseNs : a.seq > b.seq;
  }
  std::vector<Frame> frames_;
  uint64_t seq_ = 0;
};

}  // namespace vun
