// Held frames: the fault plan's delay, rate and reorder. A held frame is a copy (as the lies
// left it) in the pair's FrameHold for its direction; the pair's thread releases it when due,
// woken by a timerfd armed on the earliest release. No JS is involved.
#include <sys/timerfd.h>

#include "queue_pair.h"

namespace vun {

void QueuePair::HoldFrame(uint32_t vring, Lies& l, const uint8_t* frame, uint32_t len) {
  const bool toGuest = vring == receiveq_;
  FrameHold& hold = toGuest ? holdToGuest_ : holdFromGuest_;
  const int64_t now = MonotonicNs();
  int64_t at = now + l.delayNs;
  if (l.rateRule && l.rateRule->value) {
    // rate: the emulated link sends one frame at a time, value bit/s; the frame leaves once
    // its last bit is out (the virtio-net header is not on the wire).
    FaultRule& r = *l.rateRule;
    const uint64_t bits = 8ull * (len > cfg_.hdrLen ? len - cfg_.hdrLen : 0);
    const int64_t start = at > r.linkFreeNs ? at : r.linkFreeNs;
    r.linkFreeNs = start + static_cast<int64_t>(bits * 1000000000ull / r.value);
    at = r.linkFreeNs;
  }
  // reorder: waits for `gap` later frames (or 1 s, so a last frame is not kept forever).
  const int32_t gap = l.reorder >= 0 ? l.gap : -1;
  if (l.reorder >= 0) at = now + 1000000000ll;
  if (!hold.Push(at, gap, frame, len))
    cfg_.Count(vring, kCDropNoBuffers, 1);  // full (netem's limit)
}

void QueuePair::RecordHeld(uint32_t vring, const Lies& l) {
  if (l.delay >= 0)
    Record(vring, l.delay, kFaultDelay, kFieldDelayUs, kNoRing, l.event, 0,
           static_cast<uint64_t>(l.delayNs / 1000));
  if (l.rate >= 0) Record(vring, l.rate, kFaultRate, kFieldNone, kNoRing, l.event, 0, 0);
  if (l.reorder >= 0) Record(vring, l.reorder, kFaultReorder, kFieldNone, kNoRing, l.event, 0, 0);
}

void QueuePair::ReleaseFromGuest(const uint8_t* frame, uint32_t len) {
  const uint32_t vt = transmitq_;
  uint32_t looped = 0;
  HostPort::Sent sent =
      port_->SendFrame(frame, len, fromGuestBounce_.data(), fromGuestBounce_.size(), &looped);
  if (sent == HostPort::Sent::kFailed) return cfg_.Count(vt, kCDropHostError, 1);
  if (sent == HostPort::Sent::kTooBig) return cfg_.Count(vt, kCDropTooBig, 1);
  if (sent == HostPort::Sent::kLooped && Route(fromGuestBounce_.data(), looped) == 0)
    cfg_.Count(receiveq_, kCDropNoBuffers, 1);
  cfg_.Count(vt, kCFrames, 1);
  cfg_.Count(vt, kCBytes, len > cfg_.hdrLen ? len - cfg_.hdrLen : 0);
}

void QueuePair::ReleaseHeld() {
  const int64_t now = MonotonicNs();
  if (holdFromGuest_.NextNs() <= now && cfg_.queues[transmitq_].started) {
    holdFromGuest_.Release(now, [this](const uint8_t* f, uint32_t len) {
      ReleaseFromGuest(f, len);
      return true;
    });
    if (const uint32_t refused = port_->Flush()) cfg_.Count(transmitq_, kCDropHostError, refused);
    progress_ = true;
  }
  const QueueState& qr = cfg_.queues[receiveq_];
  if (holdToGuest_.NextNs() <= now && qr.started && !qr.broken) {
    releasing_ = true;
    // A frame the guest has no buffer for yet stays; the receiveq kick brings us back.
    holdToGuest_.Release(now,
                         [this](const uint8_t* f, uint32_t len) { return Deliver(f, len) != 0; });
    releasing_ = false;
    progress_ = true;
  }
  FlushReceiveq();
  SignalHandover();
  // notify-delay: deferred interrupts that are due.
  for (int d = 0; d < 2; d++) {
    if (notifyAtNs_[d] > now) continue;
    notifyAtNs_[d] = FrameHold::kNever;
    const uint32_t v = d == 0 ? receiveq_ : transmitq_;
    const int fd = cfg_.queues[v].callFd;
    if (fd >= 0) Wake(fd);
    cfg_.Count(v, kCNotifySent, 1);
  }
  // Coalescing: held interrupts that are due.
  for (int d = 0; d < 2; d++)
    if (coalesce_[d].Due(now)) SendHeld(d, kCoalesceSentDue);
  // The timer follows the earliest release (absolute CLOCK_MONOTONIC; 0 disarms).
  int64_t next = std::min(std::min(holdToGuest_.NextNs(), holdFromGuest_.NextNs()),
                          std::min(notifyAtNs_[0], notifyAtNs_[1]));
  next = std::min(next, std::min(coalesce_[0].DueNs(), coalesce_[1].DueNs()));
  if (next == timerArmedNs_ || timerFd_ < 0) return;
  itimerspec t{};
  if (next != FrameHold::kNever) {
    if (next <= now) next = now + 1000000;  // due but blocked: look again in 1 ms
    t.it_value.tv_sec = next / 1000000000;
    t.it_value.tv_nsec = next % 1000000000;
  }
  timerfd_settime(timerFd_, TFD_TIMER_ABSTIME, &t, nullptr);
  timerArmedNs_ = next;
}

}  // namespace vun
