// One queue pair's data path: receiveq 2n (toGuest) and transmitq 2n+1 (fromGuest), its two
// vrings (split or packed), its host port and its bounce buffers. A WorkerThread runs one or more
// pairs. queue_pair.cc: set-up, events, the transmitq, notifications and timers;
// queue_pair_receive.cc: the receiveq. A fault plan lives in the pair's fault room
// (pair_faults.h), which the pair calls at a few hooks; without a plan there is no room.
//
//   transmitq --pop--> HostPort::Send (or loopback: Route) --fill/flush/notify--> used ring
//   HostPort::Receive / handover ring --Route--> Deliver --fill--> receiveq --flush/notify-->
#pragma once

#include <unistd.h>

#include <cstdint>
#include <vector>

#include "device_config.h"
#include "host_port.h"
#include "net_rules.h"
#include "observe.h"
#include "pair_faults.h"
#include "steering.h"
#include "vring.h"

namespace vun {

// Signals an eventfd (a guest's call fd, another pair's handover wake-up).
inline void Wake(int fd) {
  uint64_t one = 1;
  ssize_t w = write(fd, &one, sizeof(one));
  (void)w;
}

class QueuePair {
 public:
  static constexpr uint32_t kBounceSize = kMaxFrameBytes;
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
    if ((faults_ && faults_->NextNs() != FrameHold::kNever) || timerArmedNs_ != FrameHold::kNever ||
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
  // fault plan's or interrupt coalescing's.
  void Notify(Vring& ring, uint32_t vring, uint32_t frames);
  void FlushPort();
  // Interrupt coalescing's say on a decision (coalesce.h): false when it holds the interrupt.
  bool Coalesce(Vring& ring, uint32_t vring, int d, uint32_t frames, bool* send);
  // Sends a held interrupt (coalescing) of direction d (0 receiveq, 1 transmitq).
  void SendHeld(int d, CoalesceAction why);
  void Broken(Vring& ring, uint32_t vring);
  // A vring whose guest memory faulted during this step (memory_fault.h) is marked broken.
  void TakeMemoryFaults();
  void WatchHost(bool on);
  // An interrupt to the driver of `vring`, counted.
  void Signal(uint32_t vring);
  // A transmitq chain's frame to the host port (after the fault room's say, with a plan).
  void SendChain(const Element& e, Lies* l);
  bool CountSent(HostPort::Sent sent, uint32_t looped, uint32_t bytes);
  // Places a frame into as many receiveq chains as it needs and writes its header as the
  // guest reads it; Deliver's result. `l`: the frame's lies, told once it is placed.
  int Place(const uint8_t* frame, uint32_t len, ReceiveVerdict verdict, Lies* l);
  // The fault room's Placed hook for a frame Place put in `taken` chains: the first chain's
  // used element told again (id, len, wrap), a second one for "repeat"; num_buffers as told.
  uint32_t TellPlaced(Lies& l, uint16_t firstHead, uint16_t firstFill, uint16_t firstSlots,
                      uint32_t firstLen, uint16_t taken);
  // The same frame for the guest once more (a fault plan's duplicate).
  void DeliverAgain(const uint8_t* frame, uint32_t len, const Lies& l);
  // Deferred work: frames and interrupts the fault room holds, held interrupts (coalescing);
  // the timer follows the earliest.
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
  // The fault room: null without a fault plan for this pair (pair_faults.h).
  std::unique_ptr<PairFaults> faults_;
  // Deliver of a frame whose lies were told already (a duplicate, a released held frame).
  bool again_ = false;
  // The pair's timer: held frames and interrupts (fault plan, coalescing).
  int timerFd_ = -1;
  int64_t timerArmedNs_ = FrameHold::kNever;
  // Interrupt coalescing per direction (coalesce.h); off for a vring under a fault plan, whose
  // interrupts the plan decides.
  Coalescer coalesce_[2];
  bool coalesceOn_[2] = {false, false};
};

}  // namespace vun
