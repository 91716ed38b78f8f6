// The virtio-net device's data plane: one worker thread per queue pair moves frames between
// the guest's rings and the host backend, entirely in C++ (no JS per packet).
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "byte_ring.h"
#include "guest_memory.h"
#include "observe.h"
#include "rss.h"
#include "split_ring.h"

namespace vun {

// Counter slots per vring in the shared counters array (src/net/counters.ts mirrors them).
enum CounterSlot : uint32_t {
  kCFrames = 0,
  kCBytes,
  kCDropNoBuffers,
  kCDropTooBig,
  kCDropHostError,
  kCDropDisabled,
  kCDropMalformed,
  kCKicks,
  kCNotifySent,
  kCNotifySuppressed,
  kCRingError,
  kCBursts,
  kCLastAvailIdx,
  kCUsedIdx,
  kCHostWouldBlock,
  kCHandover,
  kCountersPerVring,
};

enum class HostKind { kNull, kLoopback, kTap, kAfPacket };

// Where a frame from the host goes (virtio-net §5.1.6.5.5 leaves it to the device under MQ).
enum class SteerPolicy : uint32_t { kNone = 0, kToeplitz = 1, kFlowAffinity = 2 };

// Frames for another pair's receiveq travel through a ByteRing (one per source pair and target
// pair, made on first use), one record per frame.
using HandoverRing = ByteRing;

// Virtio feature bit numbers the data path looks at.
constexpr int kFCsum = 0, kFGuestCsum = 1, kFGuestTso4 = 7, kFGuestTso6 = 8, kFGuestEcn = 9,
              kFGuestUfo = 10, kFMrgRxbuf = 15, kFNotifyOnEmpty = 24, kFIndirect = 28,
              kFEventIdx = 29, kFVersion1 = 32;

struct QueueState {
  RingConfig cfg;
  bool started = false;
  bool enabled = false;
  int kickFd = -1;  // -1 with started: polled ring (no kick fd)
  int callFd = -1;
  uint16_t lastAvailIdx = 0;
  uint16_t usedIdx = 0;
  bool broken = false;
  uint32_t error = 0;
};

class NetDevice;

// One queue pair's data path (receiveq 2n, transmitq 2n+1): its rings, bounce buffers and
// processing. A WorkerThread runs one or more of them.
class PairWorker {
 public:
  PairWorker(NetDevice* dev, uint32_t pair);
  // Whether either vring of the pair is started.
  bool Active() const;
  // Attaches the rings and registers the pair's fds in `epfd`; true when a ring is polled.
  bool Setup(int epfd);
  void OnEvent(uint32_t kind);
  // One pass over both queues; true when a frame moved (busy-poll keeps going while it does).
  bool Work() {
    progress_ = false;
    ProcessTx();
    ProcessRx();
    return progress_;
  }
  // Hands the ring positions back to the device (the next start or GET_VRING_BASE uses them).
  void Teardown();

 private:
  uint64_t Tag(uint32_t kind) const { return (uint64_t(pair_) << 8) | kind; }
  void ProcessTx();
  void ProcessRx();
  bool ReadHostFrame();
  int Deliver(const uint8_t* frame, uint32_t len);
  int DeliverPending() { return Deliver(bounce_.data(), pendingLen_); }
  uint32_t SteerTarget(const uint8_t* frame, uint32_t len);
  // Routes a frame of this pair's host (or loopback) to its receiveq: here, or handed over.
  // Returns what Deliver returns for local frames; handed-over frames count as delivered.
  int Route(const uint8_t* frame, uint32_t len);
  void RecordFlow(const Element& e);
  bool DrainHandover();
  void SignalHandover();
  void FlushRx();
  void Notify(SplitRing& ring, QueueState& q, uint32_t vring);
  void Broken(SplitRing& ring, QueueState& q, uint32_t vring);
  void WatchHost(bool on);
  void Count(uint32_t vring, CounterSlot slot, uint64_t n);
  uint32_t CopyChainOut(const Element& e, uint8_t* dst, uint32_t cap);

  NetDevice* dev_;
  uint32_t pair_;
  int epfd_ = -1;  // the running thread's epoll fd (borrowed)
  bool progress_ = false;
  int hostFd_ = -1;
  bool hostWatched_ = false;
  SplitRing rx_, tx_;
  // RX: one frame waiting for guest buffers, as [virtio-net header][frame].
  std::vector<uint8_t> bounce_;
  uint32_t pendingLen_ = 0;
  // Chains popped from the receiveq but not used yet (consumed in order).
  Element rxElems_[kMaxBurst];
  std::vector<Segment> rxSegs_;
  uint32_t rxCached_ = 0, rxPos_ = 0;
  uint16_t rxFilled_ = 0;
  uint64_t rxFrames_ = 0, rxBytes_ = 0;
  uint64_t dirtyTargets_ = 0;  // pairs to wake after this burst's handovers
  std::vector<uint8_t> flowScratch_;
  Element txElems_[kMaxBurst];
  std::vector<Segment> txSegs_;
  std::vector<uint8_t> txBounce_;
  // Capture (--pcap): the observers of this pair's receiveq and transmitq, or null.
  VringObserver* capRx_ = nullptr;
  VringObserver* capTx_ = nullptr;
};

// A data-plane thread: sleeps in epoll_wait on the kick, host and handover fds of its queue
// pairs and a stop eventfd; one per pair by default (`--threads` groups pairs).
class WorkerThread {
 public:
  WorkerThread(NetDevice* dev, uint32_t index) : dev_(dev), index_(index) {}
  ~WorkerThread() { Stop(); }
  std::vector<PairWorker*> pairs;
  void Start();
  void Stop();  // wakes the thread through its stop eventfd and joins it

 private:
  void Run();
  NetDevice* dev_;
  uint32_t index_;
  std::thread thread_;
  int stopFd_ = -1;
};

class NetDevice : public Napi::ObjectWrap<NetDevice> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NetDevice(const Napi::CallbackInfo& info);
  ~NetDevice() override;

  // Read by the workers while they run; changed only while they are stopped.
  GuestMemory mem;
  uint64_t features = 0;
  HostKind host = HostKind::kNull;
  std::vector<int> hostFds;  // one per queue pair (TAP queue or AF_PACKET socket)
  uint32_t sourceLen = 0;    // null:source=LEN
  uint32_t hdrLen = 12;
  std::vector<QueueState> queues;
  uint64_t* counters = nullptr;
  // Steering (changed only while every worker is stopped, except the atomics).
  SteerPolicy policy = SteerPolicy::kNone;
  RssConfig rss;
  static constexpr uint32_t kFlowSlots = 4096;
  std::unique_ptr<std::atomic<uint64_t>[]> flows;  // (hash << 32) | pair, direct-mapped
  // [src * pairs + dst], made by the source worker on first use (release), read by the target
  // (acquire); freed only when the device is closed.
  std::unique_ptr<std::atomic<HandoverRing*>[]> handover;
  uint32_t handoverBytes = 0;
  std::vector<int> handoverFd;       // per target pair: wakes its worker
  std::atomic<uint64_t> rxReady{0};  // bit p: receiveq p started and enabled
  uint32_t pairs = 0;
  std::vector<int> cpus;  // thread t runs on cpus[t % size] when set
  uint32_t pollUs = 0;    // busy-poll this long after the last frame before sleeping
  // Observation (capture, ring trace): one per vring when on; set only while workers are
  // stopped. JS drains them (drainObserve) on a timer.
  std::vector<std::unique_ptr<VringObserver>> observers;
  VringObserver* CaptureOf(uint32_t v) {
    return v < observers.size() && observers[v] && observers[v]->capture ? observers[v].get()
                                                                         : nullptr;
  }
  VringObserver* TraceOf(uint32_t v) {
    return v < observers.size() && observers[v] && observers[v]->trace ? observers[v].get()
                                                                       : nullptr;
  }
  void UpdateRxReady(uint32_t pair);
  HandoverRing* Ring(uint32_t src, uint32_t dst) {
    return handover ? handover[size_t(src) * pairs + dst].load(std::memory_order_acquire) : nullptr;
  }
  HandoverRing* RingForProducer(uint32_t src, uint32_t dst) {
    if (!handover) return nullptr;
    std::atomic<HandoverRing*>& slot = handover[size_t(src) * pairs + dst];
    HandoverRing* r = slot.load(std::memory_order_relaxed);
    if (!r) {
      r = new HandoverRing(handoverBytes);
      slot.store(r, std::memory_order_release);  // the ring is built before the target sees it
    }
    return r;
  }
  Napi::ThreadSafeFunction events;  // ring broken reports to JS

  // Stops every worker for good (close(), GC, or environment teardown before unmapping).
  void Shutdown();

  bool Has(int bit) const { return (features >> bit) & 1; }
  uint64_t* CounterBase(uint32_t vring) { return counters + vring * kCountersPerVring; }

 private:
  Napi::Value SetMemory(const Napi::CallbackInfo& info);
  Napi::Value SetFeatures(const Napi::CallbackInfo& info);
  Napi::Value SetHost(const Napi::CallbackInfo& info);
  Napi::Value SetSteering(const Napi::CallbackInfo& info);
  Napi::Value SetCpus(const Napi::CallbackInfo& info);
  Napi::Value SetThreads(const Napi::CallbackInfo& info);
  Napi::Value SetPoll(const Napi::CallbackInfo& info);
  Napi::Value StartQueue(const Napi::CallbackInfo& info);
  Napi::Value StopQueue(const Napi::CallbackInfo& info);
  Napi::Value SetEnabled(const Napi::CallbackInfo& info);
  Napi::Value SetCall(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value SetObserve(const Napi::CallbackInfo& info);
  Napi::Value DrainObserve(const Napi::CallbackInfo& info);
  Napi::Value ObserveLost(const Napi::CallbackInfo& info);
  void StopPair(uint32_t pair);
  void MaybeStartPair(uint32_t pair);
  void StopAll();
  void ApplyTapOffloads();

  friend class WorkerThread;
  std::vector<std::unique_ptr<PairWorker>> workers_;  // one per pair
  std::vector<std::unique_ptr<WorkerThread>> threads_;
  std::vector<uint32_t> threadOf_;  // pair -> thread
  void BuildThreads(const std::vector<uint32_t>& threadOf);
  Napi::Reference<Napi::Value> countersRef_;
  napi_env env_ = nullptr;
  bool paused_ = false;
  bool closed_ = false;
  size_t drainStart_ = 0;  // the vring drainObserve starts with (round robin)
};

}  // namespace vun
