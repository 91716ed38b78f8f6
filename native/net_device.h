// The virtio-net device's data plane: one worker thread per queue pair moves frames between
// the guest's rings and the host backend, entirely in C++ (no JS per packet).
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "guest_memory.h"
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

// Frames for another pair's receiveq travel through a single-producer single-consumer ring
// (one per source pair and target pair): the source worker fills slots, the target drains them.
struct HandoverRing {
  static constexpr uint32_t kSlotBytes = 2048 + 12;
  explicit HandoverRing(uint32_t slots)
      : size(slots), lens(slots), data(size_t(slots) * kSlotBytes) {}
  const uint32_t size;
  std::atomic<uint32_t> head{0};  // written by the producer only
  std::atomic<uint32_t> tail{0};  // written by the consumer only
  std::vector<uint32_t> lens;
  std::vector<uint8_t> data;
  uint8_t* Slot(uint32_t i) { return data.data() + size_t(i % size) * kSlotBytes; }
};

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

// Runs one queue pair (receiveq 2n, transmitq 2n+1) on its own thread.
class PairWorker {
 public:
  PairWorker(NetDevice* dev, uint32_t pair);
  ~PairWorker();
  void Start();
  void Stop();  // wakes the thread through its stop eventfd and joins it
  bool running() const { return thread_.joinable(); }

 private:
  void Run();
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
  std::thread thread_;
  int stopFd_ = -1;
  int epfd_ = -1;
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
  std::unique_ptr<std::atomic<uint64_t>[]> flows;       // (hash << 32) | pair, direct-mapped
  std::vector<std::unique_ptr<HandoverRing>> handover;  // [src * pairs + dst]
  std::vector<int> handoverFd;                          // per target pair: wakes its worker
  std::atomic<uint64_t> rxReady{0};                     // bit p: receiveq p started and enabled
  uint32_t pairs = 0;
  void UpdateRxReady(uint32_t pair);
  HandoverRing* Ring(uint32_t src, uint32_t dst) {
    return handover.empty() ? nullptr : handover[size_t(src) * pairs + dst].get();
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
  Napi::Value StartQueue(const Napi::CallbackInfo& info);
  Napi::Value StopQueue(const Napi::CallbackInfo& info);
  Napi::Value SetEnabled(const Napi::CallbackInfo& info);
  Napi::Value SetCall(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void StopPair(uint32_t pair);
  void MaybeStartPair(uint32_t pair);
  void StopAll();
  void ApplyTapOffloads();

  std::vector<std::unique_ptr<PairWorker>> workers_;
  Napi::Reference<Napi::Value> countersRef_;
  napi_env env_ = nullptr;
  bool paused_ = false;
  bool closed_ = false;
};

}  // namespace vun
