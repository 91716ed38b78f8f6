// The device's data model: what the data-plane threads read while they run. Plain data, no
// N-API: net_device.cc (the JS surface) fills it and changes it only while the threads that
// read the changed part are stopped (NetDevice::Reconfigure).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "coalesce.h"
#include "dirty_log.h"
#include "faults.h"
#include "guest_memory.h"
#include "observe.h"
#include "ring_types.h"

namespace vun {

// Counter slots per vring in the counters array JS shares with us (a SharedArrayBuffer).
// This list is the only definition: its names are exported as `counterNames`, and
// src/net/counters.ts is checked against them by a test.
#define VUN_COUNTER_SLOTS(X)                \
  X(kCFrames, "frames")                     \
  X(kCBytes, "bytes")                       \
  X(kCDropNoBuffers, "dropNoBuffers")       \
  X(kCDropTooBig, "dropTooBig")             \
  X(kCDropHostError, "dropHostError")       \
  X(kCDropDisabled, "dropDisabled")         \
  X(kCDropMalformed, "dropMalformed")       \
  X(kCKicks, "kicks")                       \
  X(kCNotifySent, "notifySent")             \
  X(kCNotifySuppressed, "notifySuppressed") \
  X(kCNotifyCoalesced, "notifyCoalesced")   \
  X(kCRingError, "ringErrors")              \
  X(kCBursts, "bursts")                     \
  X(kCHandover, "handedOver")               \
  X(kCTapPlainFrames, "tapPlainFrames")     \
  X(kCTapPlainNs, "tapPlainNs")             \
  X(kCTapUringFrames, "tapUringFrames")     \
  X(kCTapUringNs, "tapUringNs")

enum CounterSlot : uint32_t {
#define VUN_SLOT_ENUM(id, name) id,
  VUN_COUNTER_SLOTS(VUN_SLOT_ENUM)
#undef VUN_SLOT_ENUM
      kCountersPerVring,
};

inline const char* CounterName(uint32_t slot) {
  static const char* const names[] = {
#define VUN_SLOT_NAME(id, name) name,
      VUN_COUNTER_SLOTS(VUN_SLOT_NAME)
#undef VUN_SLOT_NAME
  };
  return slot < kCountersPerVring ? names[slot] : "?";
}

// What the threads tell the JS side. Implemented by the N-API wrapper; called from any
// data-plane thread, so an implementation must hand the report over, never call JS itself.
class DeviceEvents {
 public:
  virtual ~DeviceEvents() = default;
  // A driver violation broke this vring (RingError code). Sent once per vring start.
  virtual void VringBroken(uint32_t vring, uint32_t error) = 0;
  // A worker thread could not be pinned to the CPU it was given (errno).
  virtual void PinFailed(uint32_t thread, int cpu, int err) = 0;
};

// One vring as the data plane runs it (index 2n: receiveq n, 2n+1: transmitq n).
struct QueueState {
  RingConfig cfg;
  bool started = false;
  bool enabled = false;  // the effective enable state, pushed by the session
  int kickFd = -1;       // -1 with started: a polled ring (no kick fd)
  int callFd = -1;
  // The ring position while stopped (start from here; reported by stopQueue).
  uint16_t lastAvailIdx = 0;
  uint16_t usedIdx = 0;
  bool broken = false;
  uint32_t error = 0;
};

struct DeviceConfig {
  explicit DeviceConfig(uint32_t pairCount)
      : pairs(pairCount),
        queues(size_t(pairCount) * 2),
        live(new std::atomic<uint32_t>[pairCount * 2]) {
    for (uint32_t v = 0; v < pairCount * 2; v++) live[v].store(0, std::memory_order_relaxed);
  }

  const uint32_t pairs;
  GuestMemory mem;
  // The dirty log (SET_LOG_BASE); used while VHOST_F_LOG_ALL is acked.
  LogArea log;
  uint64_t features = 0;
  uint32_t hdrLen = 12;  // virtio-net header bytes (net_rules.h HeaderLen)
  std::vector<QueueState> queues;
  std::vector<int> cpus;    // thread t runs on cpus[t % size] when set
  uint32_t pollUs = 0;      // busy-poll this long after the last frame before sleeping
  CoalesceConfig coalesce;  // interrupt coalescing, every vring without a fault plan
  // Observation (capture, ring trace): one per vring when on, else empty.
  std::vector<std::unique_ptr<VringObserver>> observers;
  // Fault plan: one rule table per vring (null: no rule), owned by the vring's thread while it
  // runs. Faults are logged through the vring's observer (its `faults` flag).
  std::vector<std::unique_ptr<VringFaults>> faults;
  // Counters, JS-owned: vring v's slots start at counters + v * kCountersPerVring.
  uint64_t* counters = nullptr;
  // Ring positions of running vrings, (usedIdx << 16) | lastAvailIdx, published by the
  // thread that owns the vring after each burst; read by positions() on the JS thread.
  std::unique_ptr<std::atomic<uint32_t>[]> live;

  bool Has(int bit) const { return (features >> bit) & 1; }
  uint64_t* CounterBase(uint32_t vring) const {
    return counters + size_t(vring) * kCountersPerVring;
  }
  // Relaxed atomic add: a thread may count on another pair's vring (handover drops); JS reads
  // whole values and needs no ordering with anything else.
  void Count(uint32_t vring, CounterSlot slot, uint64_t n) const {
    __atomic_fetch_add(CounterBase(vring) + slot, n, __ATOMIC_RELAXED);
  }
  // Relaxed: a position is a report for /status, ordered with nothing else.
  void Publish(uint32_t vring, uint16_t lastAvailIdx, uint16_t usedIdx) const {
    live[vring].store((uint32_t(usedIdx) << 16) | lastAvailIdx, std::memory_order_relaxed);
  }
  VringObserver* CaptureOf(uint32_t v) const {
    return v < observers.size() && observers[v] && observers[v]->capture ? observers[v].get()
                                                                         : nullptr;
  }
  VringFaults* FaultsOf(uint32_t v) const {
    return v < faults.size() && faults[v] && faults[v]->Any() ? faults[v].get() : nullptr;
  }
  VringObserver* FaultLogOf(uint32_t v) const {
    return v < observers.size() && observers[v] && observers[v]->faults ? observers[v].get()
                                                                        : nullptr;
  }
  VringObserver* TraceOf(uint32_t v) const {
    return v < observers.size() && observers[v] && observers[v]->trace ? observers[v].get()
                                                                       : nullptr;
  }
};

}  // namespace vun
