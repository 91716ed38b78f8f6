// eventfds: kick and call notifications (the mock front-end creates them; the backend reads
// kicks and writes calls).
#include <sys/eventfd.h>
#include <unistd.h>

#include "env_state.h"
#include "errors.h"
#include "exports.h"

namespace vun {
namespace {

// eventfdCreate(initval) -> fd (non-blocking, close-on-exec)
Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned init = info.Length() > 0 ? info[0].As<Napi::Number>().Uint32Value() : 0;
  int fd = eventfd(init, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, "eventfd", errno);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

// eventfdRead(fd) -> bigint counter, or null when it is zero (EAGAIN).
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint64_t v = 0;
  ssize_t n;
  do {
    n = read(fd, &v, sizeof(v));
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return env.Null();
  if (n != sizeof(v)) {
    ThrowErrno(env, "read", n < 0 ? errno : EIO, "eventfd");
    return env.Undefined();
  }
  return Napi::BigInt::New(env, v);
}

// eventfdWrite(fd, bigint)
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  bool lossless;
  uint64_t v = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  ssize_t n;
  do {
    n = write(fd, &v, sizeof(v));
  } while (n < 0 && errno == EINTR);
  if (n != sizeof(v)) ThrowErrno(env, "write", n < 0 ? errno : EIO, "eventfd");
  return env.Undefined();
}

}  // namespace

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfdCreate", Napi::Function::New<EventfdCreate>(env));
  exports.Set("eventfdRead", Napi::Function::New<EventfdRead>(env));
  exports.Set("eventfdWrite", Napi::Function::New<EventfdWrite>(env));
}

}  // namespace vun
