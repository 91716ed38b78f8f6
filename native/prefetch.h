// Prefetch for a store. A guest buffer's or descriptor's cache line sits in the driver's core;
// a plain store (or a load before the store) waits for it, and every later store queues behind.
#pragma once

namespace vun {

// Asks for the line at p in a state this core may write (x86 PREFETCHW; cores without it
// decode it as a no-op).
inline void PrefetchForWrite(const void* p) {
#if defined(__x86_64__)
  __asm__ volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace vun
