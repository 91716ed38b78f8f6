// A data-plane thread: sleeps in epoll_wait on the kick, host and handover fds of its queue
// pairs and a stop eventfd, and runs the pairs' Work() after each wake-up. One per pair by
// default (`--threads` groups pairs). Started and stopped only from the JS thread.
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

#include "device_config.h"
#include "queue_pair.h"

namespace vun {

class WorkerThread {
 public:
  WorkerThread(const DeviceConfig& cfg, DeviceEvents& events, uint32_t index)
      : cfg_(cfg), events_(events), index_(index) {}
  ~WorkerThread() { Stop(); }
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  // The pairs this thread runs (set while it is stopped).
  std::vector<QueuePair*> pairs;
  bool Running() const { return thread_.joinable(); }
  // Starts the thread when one of its pairs is active. A CPU it cannot be pinned to is
  // reported through DeviceEvents::PinFailed; the thread runs unpinned.
  void Start();
  // Wakes the thread through its stop eventfd and joins it; the pairs hand back their rings.
  void Stop();

 private:
  void Run();
  const DeviceConfig& cfg_;
  DeviceEvents& events_;
  const uint32_t index_;
  std::thread thread_;
  int stopFd_ = -1;
};

}  // namespace vun
