// The JS surface of the data plane: a thin N-API wrapper that unmarshals each call into the
// plain DeviceConfig (device_config.h) and applies it through Reconfigure (stop the affected
// threads, apply, restart them). Every call here is control plane; frames never cross into JS.
//
//   NetDevice (JS thread) --Reconfigure--> DeviceConfig, Steering, QueuePair ports
//                                           ^ read by
//   WorkerThread (one per pair or group) --runs--> QueuePair --> Vring (split or packed), HostPort,
//   Steering
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "device_config.h"
#include "queue_pair.h"
#include "steering.h"
#include "worker_thread.h"

namespace vun {

class NetDevice : public Napi::ObjectWrap<NetDevice>, private DeviceEvents {
  // A report from a data-plane thread on its way to the JS thread.
  struct Event {
    const char* kind;  // "vringBroken" | "pinFailed"
    uint32_t a;        // vring | thread
    int64_t b;         // error code | cpu
    int64_t c;         // - | errno
  };

 public:
  static Napi::Function Init(Napi::Env env);
  explicit NetDevice(const Napi::CallbackInfo& info);
  ~NetDevice() override;

  // Stops every thread for good (close(), GC, or environment teardown before unmapping).
  void Shutdown();

 private:
  static constexpr int32_t kAllPairs = -1;
  // Stops the threads that run `pair` (or all), applies the change, starts them again.
  // After Shutdown nothing is applied: the threads, pairs and steering are gone.
  template <class F>
  void Reconfigure(int32_t pair, F&& apply) {
    if (closed_) return;
    ForThreads(pair, [](WorkerThread& t) { t.Stop(); });
    apply();
    if (!paused_ && !closed_) ForThreads(pair, [](WorkerThread& t) { t.Start(); });
  }
  template <class F>
  void ForThreads(int32_t pair, F&& fn) {
    if (pair == kAllPairs) {
      for (auto& t : threads_) fn(*t);
    } else {
      fn(*threads_[threadOf_[pair]]);
    }
  }
  void BuildThreads(const std::vector<uint32_t>& threadOf);
  void ApplyHostConfig();

  // DeviceEvents: called on data-plane threads, handed to JS through `events_`.
  void VringBroken(uint32_t vring, uint32_t error) override;
  void PinFailed(uint32_t thread, int cpu, int err) override;
  void Post(Event* ev);

  Napi::Value SetMemory(const Napi::CallbackInfo& info);
  Napi::Value SetFeatures(const Napi::CallbackInfo& info);
  Napi::Value SetLog(const Napi::CallbackInfo& info);
  Napi::Value SetRingLog(const Napi::CallbackInfo& info);
  Napi::Value SetHost(const Napi::CallbackInfo& info);
  Napi::Value SetSteering(const Napi::CallbackInfo& info);
  Napi::Value SetCpus(const Napi::CallbackInfo& info);
  Napi::Value SetThreads(const Napi::CallbackInfo& info);
  Napi::Value SetPoll(const Napi::CallbackInfo& info);
  Napi::Value SetCoalesce(const Napi::CallbackInfo& info);
  Napi::Value StartQueue(const Napi::CallbackInfo& info);
  Napi::Value StopQueue(const Napi::CallbackInfo& info);
  Napi::Value SetEnabled(const Napi::CallbackInfo& info);
  Napi::Value SetCall(const Napi::CallbackInfo& info);
  Napi::Value Positions(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value SetObserve(const Napi::CallbackInfo& info);
  Napi::Value DrainObserve(const Napi::CallbackInfo& info);
  Napi::Value SetFaults(const Napi::CallbackInfo& info);
  Napi::Value ObserveLost(const Napi::CallbackInfo& info);

  std::unique_ptr<DeviceConfig> cfg_;
  std::unique_ptr<Steering> steering_;
  HostKind host_ = HostKind::kNull;
  std::vector<int> hostFds_;  // one per queue pair (TAP queue or AF_PACKET socket)
  uint32_t sourceLen_ = 0;    // null:source=LEN
  uint32_t hostFlags_ = 0;    // setHost flags (kHostTapIoUring)
  std::vector<std::unique_ptr<QueuePair>> pairs_;
  std::vector<std::unique_ptr<WorkerThread>> threads_;
  std::vector<uint32_t> threadOf_;  // pair -> thread
  Napi::ThreadSafeFunction events_;
  Napi::Reference<Napi::Value> countersRef_;
  napi_env env_ = nullptr;
  bool paused_ = false;
  bool closed_ = false;
  size_t drainStart_ = 0;  // the vring drainObserve starts with (round robin)
  int64_t startNs_ = 0;    // when the device (the session) began: fault time windows count from it
};

void InitNetDevice(Napi::Env env, Napi::Object exports);

}  // namespace vun
