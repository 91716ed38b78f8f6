#include "worker_thread.h"

#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace vun {
namespace {
constexpr uint64_t kTagStopThread = ~uint64_t(0);
}  // namespace

void WorkerThread::Start() {
  if (thread_.joinable()) return;
  bool any = false;
  for (QueuePair* p : pairs) any |= p->Active();
  if (!any) return;
  stopFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  // Workers take no signals: Node's main thread handles them. Faults stay deliverable: a
  // blocked SIGBUS from a memory access kills the process instead of reaching the handler that
  // contains it (memory_fault.h).
  sigset_t all, old;
  sigfillset(&all);
  for (int sig : {SIGBUS, SIGSEGV, SIGFPE, SIGILL}) sigdelset(&all, sig);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { Run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  // Named for top -H, ps -L and /proc/PID/task/*/comm (15 characters at most).
  const std::string name = "vun-worker-" + std::to_string(index_);
  pthread_setname_np(thread_.native_handle(), name.c_str());
  if (!cfg_.cpus.empty()) {
    const int cpu = cfg_.cpus[index_ % cfg_.cpus.size()];
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int err = pthread_setaffinity_np(thread_.native_handle(), sizeof(set), &set);
    if (err != 0) events_.PinFailed(index_, cpu, err);
  }
}

void WorkerThread::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  ssize_t w = write(stopFd_, &one, sizeof(one));
  (void)w;
  thread_.join();
  close(stopFd_);
  stopFd_ = -1;
}

void WorkerThread::Run() {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event sev{};
  sev.events = EPOLLIN;
  sev.data.u64 = kTagStopThread;
  epoll_ctl(epfd, EPOLL_CTL_ADD, stopFd_, &sev);
  // Each fd is tagged (slot in `active` << 8) | event kind.
  std::vector<QueuePair*> active;
  bool polled = false;
  for (QueuePair* p : pairs) {
    if (!p->Active()) continue;
    polled |= p->Setup(epfd, uint64_t(active.size()) << 8);
    active.push_back(p);
  }
  epoll_event evs[16];
  auto lastProgress = std::chrono::steady_clock::now();
  const auto spin = std::chrono::microseconds(cfg_.pollUs);
  bool polling = false;
  for (bool stop = false; !stop;) {
    bool progress = false, more = false;
    for (QueuePair* p : active) {
      p->SetPolling(polling);
      progress |= p->Work();
      more |= p->More();
    }
    // A polled ring (no kick fd) is looked at every millisecond; otherwise sleep until an fd,
    // unless busy-polling: then keep looking (timeout 0) until `pollUs` pass without a frame.
    // A pair that yielded with work left is come back to at once.
    int timeout = more ? 0 : polled ? 1 : -1;
    if (cfg_.pollUs) {
      auto now = std::chrono::steady_clock::now();
      if (progress) lastProgress = now;
      const bool wasPolling = polling;
      polling = now - lastProgress < spin;
      // The window just ended: one more pass, without polling, turns kicks back on.
      if (polling || wasPolling) timeout = 0;
    }
    int n = epoll_wait(epfd, evs, 16, timeout);
    for (int i = 0; i < n; i++) {
      uint64_t tag = evs[i].data.u64;
      if (tag == kTagStopThread) {
        stop = true;
        continue;
      }
      active[tag >> 8]->OnEvent(static_cast<uint32_t>(tag & 0xff));
    }
  }
  for (QueuePair* p : active) p->Teardown();
  close(epfd);
}

}  // namespace vun
