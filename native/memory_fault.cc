#include "memory_fault.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace vun {
namespace {

constexpr int kSlots = 1024;
struct Range {
  std::atomic<uintptr_t> base{0};
  std::atomic<size_t> length{0};
};
Range g_ranges[kSlots];
std::atomic<uint64_t> g_faults{0};
std::atomic<bool> g_installed{false};
struct sigaction g_previous;
uintptr_t g_page = 4096;

// Per thread: the vring in scope (-1: none) and the vrings that faulted (128 vrings: 64 pairs).
// initial-exec: the handler must not reach the TLS allocator.
// volatile: the handler writes them between two instructions of the thread it interrupts.
struct FaultTls {
  volatile int32_t vring = -1;
  volatile uint64_t faulted[2] = {0, 0};
};
__attribute__((tls_model("initial-exec"))) thread_local FaultTls t_fault;

bool InGuestRange(uintptr_t a) {
  for (const Range& r : g_ranges) {
    // Acquire: pairs with the release in GuestRangeAdd, so base and length belong together.
    const uintptr_t b = r.base.load(std::memory_order_acquire);
    if (b != 0 && a >= b && a - b < r.length.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

void HandOn(int sig, siginfo_t* si, void* uc) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) g_previous.sa_sigaction(sig, si, uc);
    return;
  }
  if (g_previous.sa_handler == SIG_DFL || g_previous.sa_handler == SIG_IGN) {
    // Back to the default action: the faulting access runs again and the process dies with
    // SIGBUS, as it would have without us (a fault cannot be ignored).
    signal(sig, SIG_DFL);
    return;
  }
  g_previous.sa_handler(sig);
}

void OnSigbus(int sig, siginfo_t* si, void* uc) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  if (InGuestRange(a)) {
    void* page = reinterpret_cast<void*>(a & ~(g_page - 1));
    // mmap is a plain system call here (async-signal-safe in practice, as QEMU relies on too).
    if (mmap(page, g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
             0) != MAP_FAILED) {
      g_faults.fetch_add(1, std::memory_order_relaxed);
      const int32_t v = t_fault.vring;
      if (v >= 0 && v < 128) t_fault.faulted[v / 64] |= uint64_t(1) << (v % 64);
      return;  // the access runs again, on the zero page
    }
  }
  HandOn(sig, si, uc);
}

}  // namespace

void InstallMemoryFaultHandler() {
  if (g_installed.exchange(true)) return;
  g_page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &g_previous);
}

void GuestRangeAdd(void* base, size_t length) {
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  for (Range& r : g_ranges) {
    uintptr_t expected = 0;
    // Claim the slot with a placeholder that matches no address, then publish the range.
    if (r.base.compare_exchange_strong(expected, UINTPTR_MAX, std::memory_order_acq_rel)) {
      r.length.store(length, std::memory_order_relaxed);
      // Release: the length is visible to a handler that sees this base.
      r.base.store(b, std::memory_order_release);
      return;
    }
  }
  // More than kSlots live mappings: this one's faults are not contained (the process dies, as
  // before). Regions are limited to 509 per table, so only leaked mappings get here.
}

void GuestRangeRemove(void* base) {
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  for (Range& r : g_ranges) {
    if (r.base.load(std::memory_order_relaxed) == b) {
      r.base.store(0, std::memory_order_release);
      return;
    }
  }
}

uint64_t MemoryFaultCount() {
  return g_faults.load(std::memory_order_relaxed);
}

MemoryFaultScope::MemoryFaultScope(uint32_t vring) : prev_(t_fault.vring) {
  t_fault.vring = static_cast<int32_t>(vring);
}

MemoryFaultScope::~MemoryFaultScope() {
  t_fault.vring = prev_;
}

int32_t SetMemoryFaultVring(int32_t vring) {
  const int32_t prev = t_fault.vring;
  t_fault.vring = vring;
  return prev;
}

bool TakeMemoryFault(uint32_t vring) {
  if (vring >= 128) return false;
  volatile uint64_t& word = t_fault.faulted[vring / 64];
  const uint64_t bit = uint64_t(1) << (vring % 64);
  if (!(word & bit)) return false;
  word = word & ~bit;  // no guest access here, so no fault between the read and the write
  return true;
}

}  // namespace vun
