// One queue pair's data path: receiveq 2n (toGuest) and transmitq 2n+1 (fromGuest), its two
// split rings, its host port and its bounce buffers. A WorkerThread runs one or more pairs.
//
//   transmitq --pop--> HostPort::Send (or loopback: Route) --fill/flush/notify--> used ring
//   HostPort::Receive / handover ring --Route--> Deliver --fill--> receiveq --flush/notify-->
#pragma once

#include <cstdint>
#include <vector>

#include "device_config.h"
#include "host_port.h"
#include "observe.h"
#include "split_ring.h"
#include "steering.h"

namespace vun {

class QueuePair {
 public:
  QueuePair(DeviceConfig& cfg, Steering& steering, DeviceEvents& events, uint32_t pair);

  // epoll event kinds of a pair (the thread tags each fd with (pair slot << 8) | kind).
  enum EventKind : uint32_t { kReceiveqKick = 1, kTransmitqKick = 2, kHost = 3, kHandover = 4 };

  uint32_t pair() const { return pair_; }
  // Whether either vring of the pair is started.
  bool Active() const;
  // The host port this pair uses from the next Setup on (changed while stopped).
  void SetPort(std::unique_ptr<HostPort> port) { port_ = std::move(port); }
  HostPort* port() const { return port_.get(); }
  // Attaches the rings and registers the pair's fds in `epfd` with `tag | kind`; true when a
  // ring or the host has no fd and must be polled.
  bool Setup(int epfd, uint64_t tag);
  void OnEvent(uint32_t kind);
  // One pass over both queues; true when a frame moved (busy-poll keeps going while it does).
  bool Work() {
    progress_ = false;
    ProcessTransmitq();
    ProcessReceiveq();
    return progress_;
  }
  // Hands the ring positions back to the device config (the next start and stopQueue use them).
  void Teardown();

 private:
  void ProcessTransmitq();
  void ProcessReceiveq();
  // Places a frame ([header][frame]) into receiveq chains. 1: delivered or dropped for good;
  // 0: not enough guest buffers (the caller keeps the frame); -1: ring broken.
  int Deliver(const uint8_t* frame, uint32_t len);
  // Routes a frame for this pair's receiveq to the receiveq steering picks: here, or handed
  // over. Returns what Deliver returns; handed-over frames count as delivered.
  int Route(const uint8_t* frame, uint32_t len);
  bool DrainHandover();
  void SignalHandover();
  void FlushReceiveq();
  void Notify(SplitRing& ring, uint32_t vring);
  void Broken(SplitRing& ring, uint32_t vring);
  void WatchHost(bool on);

  DeviceConfig& cfg_;
  Steering& steering_;
  DeviceEvents& events_;
  const uint32_t pair_;
  const uint32_t receiveq_, transmitq_;  // vring indexes
  std::unique_ptr<HostPort> port_;
  int epfd_ = -1;  // the running thread's epoll fd (borrowed)
  uint64_t tag_ = 0;
  bool progress_ = false;
  bool hostWatched_ = false;
  SplitRing toGuest_, fromGuest_;
  // toGuest: one frame waiting for guest buffers, as [virtio-net header][frame].
  std::vector<uint8_t> bounce_;
  uint32_t pendingLen_ = 0;
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
};

}  // namespace vun
