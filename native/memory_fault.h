// Containing SIGBUS raised by guest memory. A front-end that shrinks a region's file after we
// mapped it (a memfd without F_SEAL_SHRINK) turns our next access past the new end into SIGBUS,
// which would kill the process. The handler checks that the faulting address lies in a
// mapping this addon made; if so it maps a private zero page over the faulting page (the access
// then completes on memory nobody shares), counts the fault and marks the vring whose work was
// running on this thread (MemoryFaultScope). The queue pair marks that vring broken
// (MEMORY_FAULT) after its step; the other queues go on. Any other SIGBUS is handed on to the
// handler that was there before (by default: the process dies, as it should).
#pragma once

#include <cstddef>
#include <cstdint>

namespace vun {

// Installs the handler once per process (idempotent).
void InstallMemoryFaultHandler();

// The mappings whose faults are contained. Add after mmap, remove before munmap.
void GuestRangeAdd(void* base, size_t length);
void GuestRangeRemove(void* base);

// Faults contained since the process started, on any thread.
uint64_t MemoryFaultCount();

// The vring whose work touches guest memory on this thread while the scope lives (nested
// scopes restore the outer vring when they end).
class MemoryFaultScope {
 public:
  explicit MemoryFaultScope(uint32_t vring);
  ~MemoryFaultScope();
  MemoryFaultScope(const MemoryFaultScope&) = delete;
  MemoryFaultScope& operator=(const MemoryFaultScope&) = delete;

 private:
  int32_t prev_;
};

// The main thread's scope for the TS data plane: sets this thread's vring (-1: none) and
// returns the one it replaces.
int32_t SetMemoryFaultVring(int32_t vring);

// Whether `vring` faulted on this thread since the last call for it (clears the mark).
bool TakeMemoryFault(uint32_t vring);

}  // namespace vun
