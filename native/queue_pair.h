// One queue pair's data path: receiveq 2n (toGuest) and transmitq 2n+1 (fromGuest), its two
// vrings (split or packed), its host port and its bounce buffers. A WorkerThread runs one or more
// pairs. queue_pair.cc: set-up, events, the transmitq; queue_pair_receive.cc: the receiveq;
// queue_pair_faults.cc: the fault plan's lies.
//
//   transmitq --pop--> HostPort::Send (or loopback: Route) --fill/flush/notify--> used ring
//   HostPort::Receive / handover ring --Route--> Deliver --fill--> receiveq --flush/notify-->
#pragma once

#include <unistd.h>

#include <cstdint>
#include <vector>

#include "device_config.h"
#include "faults.h"
#include "frame_hold.h"
#include "host_port.h"
#include "observe.h"
#include "steering.h"
#include "vring.h"

namespace vun {

// What the faults of one event make the device do, collected when the event is taken
// (VringFaults::Next) and recorded when each part is applied. Rule indexes, -1: not asked.
struct Lies {
  bool pending = false;  // receiveq: decided for the frame in progress, not applied yet
  uint64_t event = 0;
  int32_t drop = -1, duplicate = -1, corrupt = -1, withhold = -1, runt = -1;
  int32_t usedLen = -1, usedId = -1, descRewrite = -1;
  uint8_t dropAction = kFaultDrop;  // drop or loss-gilbert
  // delay, rate, reorder: the frame is held and leaves later (frame_hold.h).
  int32_t delay = -1, rate = -1, reorder = -1;
  int64_t delayNs = 0;
  FaultRule* rateRule = nullptr;  // its link state
  int32_t gap = 0;
  bool Holds() const { return delay >= 0 || rate >= 0 || reorder >= 0; }
  // The rules behind this event's lies, each once, in a fixed order (the capture's note;
  // src/faults/lies.ts rulesOf lists them the same way).
  uint32_t Rules(uint16_t* out, uint32_t max) const {
    const int32_t all[] = {drop,      duplicate,   corrupt,    runt,      header[0], header[1],
                           header[2], header[3],   header[4],  header[5], header[6], usedLen,
                           usedId,    descRewrite, withhold,   delay,     rate,      reorder,
                           usedBurst, storm,       notifyDelay};
    uint32_t n = 0;
    for (int32_t r : all) {
      if (r < 0 || n >= max) continue;
      bool seen = false;
      for (uint32_t i = 0; i < n; i++) seen |= out[i] == r;
      if (!seen) out[n++] = static_cast<uint16_t>(r);
    }
    return n;
  }
  // used-burst: this chain's used element waits until `burstN` are written, then all publish.
  int32_t usedBurst = -1;
  uint32_t burstN = 0;
  // notify-storm: `stormN` more interrupts after this burst's; notify-delay: its interrupt late.
  int32_t storm = -1, notifyDelay = -1;
  uint32_t stormN = 0;
  int64_t notifyDelayNs = 0;
  uint8_t descField = 0;  // kFieldAddr, kFieldLen or kFieldFlags
  uint64_t descValue = 0;
  bool AboutUsed() const { return usedLen >= 0 || usedId >= 0 || descRewrite >= 0; }
  bool Twice() const { return usedId >= 0 && idMode == kIdRepeat; }  // used-id "repeat"
  uint8_t corruptBit = 0, lenMode = 0, idMode = 0;
  uint64_t lenValue = 0, idValue = 0;
  int32_t header[7] = {-1, -1, -1, -1, -1, -1, -1};  // rule per plan.ts HEADER_FIELDS index
  uint64_t headerValue[7] = {};
  // What LieFrame changed, recorded once the frame is delivered (it may wait for buffers).
  uint64_t headerOld[7] = {};
  uint8_t byteOld = 0, byteNew = 0;
  uint32_t runtFrom = 0, runtTo = 0;
  bool ChangesFrame() const {
    if (corrupt >= 0 || runt >= 0) return true;
    for (int f = 0; f < 6; f++)  // num_buffers (6) is written after delivery
      if (header[f] >= 0) return true;
    return false;
  }
};

// Signals an eventfd (a guest's call fd, another pair's handover wake-up).
inline void Wake(int fd) {
  uint64_t one = 1;
  ssize_t w = write(fd, &one, sizeof(one));
  (void)w;
}

class QueuePair {
 public:
  static constexpr uint32_t kBounceSize = 65536 + 12 + 16;  // a 64 KiB GSO frame and its header
  // receiveq fills per flush: fewer flushes (each ends in a full barrier before the driver's
  // event area is read) measured 1.03x (0.99-1.09) at 64 B against 32, in 3 alternating rounds.
  static constexpr uint16_t kFlushEvery = 128;
  QueuePair(DeviceConfig& cfg, Steering& steering, DeviceEvents& events, uint32_t pair);

  // epoll event kinds of a pair (the thread tags each fd with (pair slot << 8) | kind).
  enum EventKind : uint32_t {
    kReceiveqKick = 1,
    kTransmitqKick = 2,
    kHost = 3,
    kHandover = 4,
    kHoldTimer = 5,  // a held frame's release time (delay, rate, reorder)
  };
  ~QueuePair();

  uint32_t pair() const { return pair_; }
  // Whether either vring of the pair is started.
  bool Active() const;
  // The host port this pair uses from the next Setup on (changed while stopped).
  void SetPort(std::unique_ptr<HostPort> port);
  HostPort* port() const { return port_.get(); }
  // Attaches the rings and registers the pair's fds in `epfd` with `tag | kind`; true when a
  // ring or the host has no fd and must be polled.
  bool Setup(int epfd, uint64_t tag);
  void OnEvent(uint32_t kind);
  // One pass over both queues; true when a frame moved (busy-poll keeps going while it does).
  bool Work() {
    progress_ = false;
    more_ = false;
    ProcessTransmitq();
    ProcessReceiveq();
    if (holdToGuest_.size() || holdFromGuest_.size() || timerArmedNs_ != FrameHold::kNever ||
        notifyAtNs_[0] != FrameHold::kNever || notifyAtNs_[1] != FrameHold::kNever ||
        coalesce_[0].DueNs() != Coalescer::kNever || coalesce_[1].DueNs() != Coalescer::kNever)
      ReleaseHeld();
    TakeMemoryFaults();
    return progress_;
  }
  // While the thread busy-polls (--poll-us), an empty transmitq leaves the driver's kicks off:
  // the thread comes back anyway, and a kick costs the guest an exit. The pass after the poll
  // window ends (polling false) turns them on before the thread sleeps.
  void SetPolling(bool on) { polling_ = on; }
  // Whether the last pass stopped with work left (a budget ran out): the thread looks at its
  // fds without sleeping and comes back.
  bool More() const { return more_; }
  // What one pass takes before it yields, so that a host that never runs dry (null:source, a
  // busy TAP), a guest that refills as fast, or one that keeps its transmitq full cannot keep
  // the thread from its stop signal: host frames into the receiveq, bursts off the transmitq.
  static constexpr uint32_t kReceiveBudget = 256;
  static constexpr uint32_t kTransmitBursts = 4;
  // Hands the ring positions back to the device config (the next start and stopQueue use them).
  void Teardown();

 private:
  void ProcessTransmitq();
  void ProcessReceiveq();
  // Places a frame ([header][frame]) into receiveq chains. 1: delivered or dropped for good;
  // 0: not enough guest buffers (the caller keeps the frame); -1: ring broken.
  int Deliver(const uint8_t* frame, uint32_t len);
  static constexpr int kGeneralPath = -2;
  int DeliverWhole(const uint8_t* frame, uint32_t len, bool clearFlags);
  int ReceiveWhole(uint32_t* budget, bool* blocked);
  // The next receive chain: 1 when one waits at pos_, else PopToGuest's answer.
  int NextToGuest() { return pos_ < cached_ ? 1 : PopToGuest(); }
  int PopToGuest();
  // Routes a frame for this pair's receiveq to the receiveq steering picks: here, or handed
  // over. Returns what Deliver returns; handed-over frames count as delivered.
  int Route(const uint8_t* frame, uint32_t len);
  bool DrainHandover();
  void SignalHandover();
  void FlushReceiveq();
  // The notification decision for a flush of `frames` used entries: the ring's, then the
  // fault plan's lies or interrupt coalescing.
  void Notify(Vring& ring, uint32_t vring, uint32_t frames);
  // Sends a held interrupt (coalescing) of direction d (0 receiveq, 1 transmitq).
  void SendHeld(int d, CoalesceAction why);
  void Broken(Vring& ring, uint32_t vring);
  // A vring whose guest memory faulted during this step (memory_fault.h) is marked broken.
  void TakeMemoryFaults();
  void WatchHost(bool on);
  // Faults (queue_pair_faults.cc): take the event's lies; apply and record them.
  void TakeLies(VringFaults& f, uint32_t vring, Lies* lies);
  void Record(uint32_t vring, int32_t rule, uint8_t action, uint8_t field, uint32_t ringIdx,
              uint64_t event, uint64_t oldValue, uint64_t newValue);
  // A copy of `frame` in lieBuf_ with the frame-changing lies applied (corrupt, header, runt);
  // returns its length. RecordFrameLies logs them once the frame reached the guest.
  uint32_t LieFrame(Lies& l, const uint8_t* frame, uint32_t len);
  void RecordFrameLies(uint32_t vring, const Lies& l);
  HostPort::Sent SendFromGuest(const Element& e, Lies* l, uint32_t* looped);
  // The used element the device reports for chain `head` written `len` bytes: truth or lie.
  void LieUsed(uint32_t vring, const Lies& l, uint16_t head, uint32_t len, uint32_t* id,
               uint32_t* outLen);
  bool NotifyHeldBack(uint32_t vring);
  // Held frames (queue_pair_hold.cc): hold one (its lies decided), release those due, and
  // keep the timer on the earliest release.
  void HoldFrame(uint32_t vring, Lies& l, const uint8_t* frame, uint32_t len);
  // Notification lies of one event (used-burst, notify-storm, notify-delay), for its burst.
  void TakeNotifyLies(uint32_t vring, const Lies& l, uint32_t head);
  void RecordHeld(uint32_t vring, const Lies& l);
  void ReleaseHeld();
  void ReleaseFromGuest(const uint8_t* frame, uint32_t len);

  DeviceConfig& cfg_;
  Steering& steering_;
  DeviceEvents& events_;
  const uint32_t pair_;
  const uint32_t receiveq_, transmitq_;  // vring indexes
  std::unique_ptr<HostPort> port_;
  int epfd_ = -1;  // the running thread's epoll fd (borrowed)
  uint64_t tag_ = 0;
  bool progress_ = false;
  bool more_ = false;
  bool polling_ = false;
  bool hostWatched_ = false;
  // Whether the driver's kicks are on for each vring (0 receiveq, 1 transmitq): on while the
  // device waits, off while it works (a driver that kicks every refill costs both sides a
  // syscall). They are on after a start: the device waits for its first kick.
  bool kicksOn_[2] = {true, true};
  Vring toGuest_, fromGuest_;
  // toGuest: where the host port reads a frame, and the frame waiting for guest buffers, as
  // [virtio-net header][frame] (in bounce_ or in the port's own buffers).
  std::vector<uint8_t> bounce_;
  HostPort::Frame pending_;
  // receiveq chains popped but not used yet (consumed in order), and this burst's fills.
  Element toGuestElems_[kMaxBurst];
  std::vector<Segment> toGuestSegs_;
  uint32_t cached_ = 0, pos_ = 0;
  uint16_t filled_ = 0;
  uint64_t burstFrames_ = 0, burstBytes_ = 0;
  uint64_t dirtyTargets_ = 0;  // pairs to wake after this burst's handovers
  std::vector<uint8_t> flowScratch_;
  Element fromGuestElems_[kMaxBurst];
  std::vector<Segment> fromGuestSegs_;
  std::vector<uint8_t> fromGuestBounce_;
  // Capture (--pcap): the observers of this pair's receiveq and transmitq, or null.
  VringObserver* capToGuest_ = nullptr;
  VringObserver* capFromGuest_ = nullptr;
  // Fault plan: this pair's rules per vring (null: no rule for it), and where faults are logged.
  VringFaults* faultsToGuest_ = nullptr;
  VringFaults* faultsFromGuest_ = nullptr;
  VringObserver* faultLogToGuest_ = nullptr;
  VringObserver* faultLogFromGuest_ = nullptr;
  Lies toGuestLies_, fromGuestLies_;
  std::vector<uint8_t> lieBuf_;  // a frame changed by a lie (corrupt, header, runt)
  bool inDuplicate_ = false;
  FrameHold holdToGuest_, holdFromGuest_;
  bool releasing_ = false;  // Deliver of a held frame: its lies were taken when it was held
  int timerFd_ = -1;
  int64_t timerArmedNs_ = FrameHold::kNever;
  // Per direction (0 toGuest, 1 fromGuest): used-burst's batch size for the burst in progress
  // and the used elements written but not published; notify-storm's extra interrupts;
  // notify-delay's delay for this burst and the time a deferred interrupt is due.
  uint32_t burstN_[2] = {0, 0};
  uint16_t heldUsed_[2] = {0, 0};
  uint32_t stormN_[2] = {0, 0};
  int64_t notifyDelayNs_[2] = {0, 0};
  int64_t notifyAtNs_[2] = {FrameHold::kNever, FrameHold::kNever};
  // Interrupt coalescing per direction (coalesce.h); off for a vring under a fault plan, whose
  // interrupts the plan decides.
  Coalescer coalesce_[2];
  bool coalesceOn_[2] = {false, false};
};

}  // namespace vun
