// Interrupt coalescing at the device, per vring: the idea of a NIC's `ethtool -C` (rx-usecs,
// rx-frames, adaptive-rx) applied to used-buffer notifications. The ring's own decision (the
// driver's flags or EVENT_IDX, §2.7.10 / §2.8.10) says *whether* the driver wants an interrupt;
// this decides *when* it goes out. It never sends one the ring did not ask for, and it never
// holds one longer than `usecs`. Plain logic on numbers, so that a test can drive it with a
// clock of its own (test_surface.cc).
#pragma once

#include <cstdint>

namespace vun {

enum CoalesceMode : uint8_t {
  kCoalesceOff = 0,       // every interrupt the ring asks for goes out at once
  kCoalesceStatic = 1,    // held until `frames` used entries or `usecs` after the first ask
  kCoalesceAdaptive = 2,  // at once when the last one is `usecs` old (idle), else held until then
};

struct CoalesceConfig {
  uint8_t mode = kCoalesceOff;
  uint32_t usecs = 0;   // the longest an asked-for interrupt waits
  uint32_t frames = 0;  // send as soon as this many used entries are owed (0: no limit)
};

class Coalescer {
 public:
  static constexpr int64_t kNever = INT64_MAX;
  enum Verdict : uint8_t {
    kNone,  // nothing asked, nothing owed: no interrupt (the ring suppressed it)
    kSend,  // send now (asked while idle, or the frame limit was reached)
    kHold,  // asked: held until DueNs()
    kJoin,  // asked while one is held: joins it (one interrupt fewer)
    kWait,  // not asked, one is held: these entries ride on it
  };
  // Why the last kSend went out (the ring trace says it).
  enum Reason : uint8_t { kAsked = 0, kFrames = 1, kDue = 2, kStop = 3 };

  // One flush of `frames` used entries at `nowNs`; `asked`: the ring's notification decision.
  Verdict Flushed(const CoalesceConfig& c, int64_t nowNs, uint32_t frames, bool asked) {
    const bool owed = dueNs_ != kNever;
    if (!asked && !owed) return kNone;
    owedFrames_ += frames;
    if (c.mode == kCoalesceOff) return Sent(nowNs, kAsked);
    if (c.frames && owedFrames_ >= c.frames) return Sent(nowNs, kFrames);
    if (!asked) return kWait;
    if (owed) return kJoin;
    const int64_t window = int64_t(c.usecs) * 1000;
    if (c.mode == kCoalesceAdaptive) {
      if (nowNs - lastSentNs_ >= window) return Sent(nowNs, kAsked);  // idle: no wait
      dueNs_ = lastSentNs_ + window;
    } else {
      dueNs_ = nowNs + window;
    }
    return kHold;
  }

  // Whether the held interrupt is due at `nowNs`; when it is, it counts as sent.
  bool Due(int64_t nowNs) {
    if (dueNs_ > nowNs) return false;
    Sent(nowNs, kDue);
    return true;
  }
  // A stop sends what is held (the positions are handed back with every entry announced).
  bool Stop(int64_t nowNs) {
    if (dueNs_ == kNever) return false;
    Sent(nowNs, kStop);
    return true;
  }
  void Reset() {
    dueNs_ = kNever;
    owedFrames_ = 0;
    lastSentNs_ = -kNever / 2;
    reason_ = kAsked;
  }

  int64_t DueNs() const { return dueNs_; }
  uint32_t OwedFrames() const { return owedFrames_; }
  // The frames the last kSend (or Due, Stop) announced, and why it went out.
  uint32_t SentFrames() const { return sentFrames_; }
  Reason LastReason() const { return reason_; }
  int64_t LastSentNs() const { return lastSentNs_; }

 private:
  Verdict Sent(int64_t nowNs, Reason why) {
    lastSentNs_ = nowNs;
    dueNs_ = kNever;
    sentFrames_ = owedFrames_;
    owedFrames_ = 0;
    reason_ = why;
    return kSend;
  }

  int64_t dueNs_ = kNever;
  int64_t lastSentNs_ = -kNever / 2;
  uint32_t owedFrames_ = 0;
  uint32_t sentFrames_ = 0;
  Reason reason_ = kAsked;
};

}  // namespace vun
