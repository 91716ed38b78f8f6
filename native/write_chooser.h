// How a TAP port writes its bursts, chosen by what each way costs on the machine it runs on.
// Batching a burst's writes into one io_uring_enter saves a system call's entry and exit per
// frame, which is most of a frame's cost on some hosts and nothing measurable beside the TAP
// path itself on others, where io_uring's own work makes it the slower way (bench/notes.md).
// So neither is right everywhere: the chooser writes in turns of kTurnBursts bursts each way,
// a first turn each to warm up (the ring's set-up, its slots' first page faults; not counted),
// then kTurns turns each, keeps the way with the lower cost per frame (the port measures the
// worker thread's CPU time while sampling: wall time also counts the moments the thread was
// not running), and samples again every kResampleNs. A fixed choice (io-uring=on|off) never
// samples.
#pragma once

#include <cstdint>

namespace vun {

class WriteChooser {
 public:
  enum Way : uint32_t { kPlain = 0, kUring = 1 };
  static constexpr uint32_t kTurnBursts = 64;
  static constexpr uint32_t kWarmTurns = 1;  // per way, first, not counted
  static constexpr uint32_t kTurns = 3;
  static constexpr uint64_t kResampleNs = 10'000'000'000ull;

  // fixed: -1 choose by cost, else the way to keep.
  explicit WriteChooser(int fixed) : fixed_(fixed) {
    way_ = fixed == kPlain ? kPlain : kUring;
    sampling_ = fixed < 0;
  }
  Way Current() const { return way_; }
  // io_uring cannot be had here: plain writes from now on.
  void Refused() {
    fixed_ = kPlain;
    way_ = kPlain;
    sampling_ = false;
  }
  // Whether the burst starting at `now` (CLOCK_MONOTONIC) is measured: the port then takes its
  // CPU time, which costs a system call at each end of the burst.
  bool Sampling(uint64_t now) const {
    return fixed_ < 0 && (sampling_ || now - decidedAt_ >= kResampleNs);
  }
  // A burst of `frames` frames was written the Current() way at a cost of `ns`; `now` is
  // CLOCK_MONOTONIC.
  void Burst(uint32_t frames, uint64_t ns, uint64_t now) {
    if (fixed_ >= 0 || frames == 0) return;
    if (!sampling_) {
      if (now - decidedAt_ < kResampleNs) return;
      sampling_ = true;
      ns_[0] = ns_[1] = frames_[0] = frames_[1] = 0;
      turns_ = bursts_ = 0;
    }
    if (turns_ >= 2 * kWarmTurns) {
      ns_[way_] += ns;
      frames_[way_] += frames;
    }
    if (++bursts_ < kTurnBursts) return;
    bursts_ = 0;
    if (++turns_ < 2 * (kWarmTurns + kTurns)) {
      way_ = way_ == kPlain ? kUring : kPlain;
      return;
    }
    // Both ways measured kTurns times: the cheaper per frame is kept until the next sampling.
    way_ = ns_[kUring] * frames_[kPlain] < ns_[kPlain] * frames_[kUring] ? kUring : kPlain;
    sampling_ = false;
    decidedAt_ = now;
  }

 private:
  int fixed_;
  Way way_;
  bool sampling_;
  uint64_t ns_[2] = {0, 0}, frames_[2] = {0, 0};
  uint32_t turns_ = 0, bursts_ = 0;
  uint64_t decidedAt_ = 0;
};

}  // namespace vun
