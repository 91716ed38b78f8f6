// What the machine charges for the things our data path is made of, measured the way the data
// path pays them: a system call's entry and exit, an eventfd wake of a blocked thread, a frame
// written to a TAP. Benchmarks record these beside their results (bench/lib.mjs machine()), so
// a figure says what kind of machine it holds on. Not used by the product.
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "exports.h"
#include "napi_values.h"

namespace vun {
namespace {

double NsPer(std::chrono::steady_clock::time_point t0, uint64_t n) {
  const auto d = std::chrono::steady_clock::now() - t0;
  return double(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) / double(n);
}

// getppid: a system call that does nothing, so what is timed is entry and exit.
double SyscallNs() {
  constexpr uint64_t kN = 200000;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < kN; i++) syscall(SYS_getppid);
  return NsPer(t0, kN);
}

// Two threads pass a token over two eventfds, each blocked in read until the other writes: a
// round trip is two wakes of a sleeping thread (write, wake-up, read), as a kick or a handover.
double EventfdWakeNs() {
  constexpr uint64_t kN = 20000;
  const int a = eventfd(0, EFD_CLOEXEC), b = eventfd(0, EFD_CLOEXEC);
  if (a < 0 || b < 0) {
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    return -1;
  }
  std::thread peer([a, b] {
    uint64_t v = 1;
    for (uint64_t i = 0; i < kN; i++) {
      if (read(a, &v, 8) != 8 || write(b, &v, 8) != 8) return;
    }
  });
  uint64_t v = 1;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < kN; i++) {
    if (write(a, &v, 8) != 8 || read(b, &v, 8) != 8) break;
  }
  const double ns = NsPer(t0, 2 * kN);
  peer.join();
  close(a);
  close(b);
  return ns;
}

// A 64-byte broadcast frame (EtherType 0x88b5, local experimental) written to a TAP that is up
// and has no vnet header: the kernel's TAP path as the data path's plain writes pay it.
double TapWriteNs(int fd) {
  constexpr uint64_t kN = 100000;
  uint8_t frame[64] = {};
  std::memset(frame, 0xff, 6);
  const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x42};
  std::memcpy(frame + 6, src, 6);
  frame[12] = 0x88;
  frame[13] = 0xb5;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < kN; i++) {
    if (write(fd, frame, sizeof frame) != sizeof frame) return -1;
  }
  return NsPer(t0, kN);
}

// machineCosts(tapFd: number | -1) -> {syscallNs, eventfdWakeNs, tapWriteNs (-1: no TAP)}
Napi::Value MachineCosts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd =
      info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : -1;
  Napi::Object o = Napi::Object::New(env);
  o.Set("syscallNs", SyscallNs());
  o.Set("eventfdWakeNs", EventfdWakeNs());
  o.Set("tapWriteNs", fd >= 0 ? TapWriteNs(fd) : -1.0);
  return o;
}

}  // namespace

void InitMachineCosts(Napi::Env env, Napi::Object exports) {
  exports.Set("machineCosts", Napi::Function::New<MachineCosts>(env));
}

}  // namespace vun
