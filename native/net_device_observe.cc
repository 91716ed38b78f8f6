// The observation calls of the data plane's JS surface (capture and ring trace): the threads
// write records into one SPSC ring per vring (observe.h); the JS thread drains them here.
#include <cstring>

#include "errors.h"
#include "net_device.h"

namespace vun {

// setObserve({capture, trace, snapLen, bytes}): per-vring observation rings of `bytes` each
// (capture: frames cut to snapLen; trace: ring steps). Both false turns observation off.
Napi::Value NetDevice::SetObserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) {
    ThrowArg(env, "setObserve({capture, trace, snapLen, bytes})");
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  bool capture = o.Get("capture").ToBoolean();
  bool trace = o.Get("trace").ToBoolean();
  uint32_t snap =
      o.Get("snapLen").IsNumber() ? o.Get("snapLen").As<Napi::Number>().Uint32Value() : 262144;
  uint32_t bytes =
      o.Get("bytes").IsNumber() ? o.Get("bytes").As<Napi::Number>().Uint32Value() : (4u << 20);
  if (bytes < 4096 || bytes > (1u << 30) || snap > (1u << 20)) {
    ThrowArg(env, "setObserve: bytes 4 KiB..1 GiB, snapLen <= 1 MiB");
    return env.Undefined();
  }
  Reconfigure(kAllPairs, [&] {
    cfg_->observers.clear();
    if (!capture && !trace) return;
    for (uint32_t v = 0; v < cfg_->queues.size(); v++)
      cfg_->observers.emplace_back(
          new VringObserver(static_cast<uint16_t>(v), bytes, capture, trace, snap));
  });
  return env.Undefined();
}

// drainObserve(buf): moves waiting records into `buf` as [u32 len][record] each, vring by
// vring, until it is full. Returns the bytes written. Only the JS thread consumes. Each call
// starts one vring further on, so a busy vring cannot keep the others from being drained.
Napi::Value NetDevice::DrainObserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer()) {
    ThrowArg(env, "drainObserve(buffer)");
    return env.Undefined();
  }
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  uint8_t* out = buf.Data();
  const size_t cap = buf.Length();
  size_t n = 0;
  auto& observers = cfg_->observers;
  const size_t count = observers.size();
  if (count) drainStart_ = (drainStart_ + 1) % count;
  for (size_t k = 0; k < count; k++) {
    auto& o = observers[(drainStart_ + k) % count];
    if (!o) continue;
    bool room = o->ring.Drain([&](const uint8_t* rec, uint32_t len) {
      if (cap - n < 4 + size_t(len)) return false;
      std::memcpy(out + n, &len, 4);
      std::memcpy(out + n + 4, rec, len);
      n += 4 + len;
      return true;
    });
    if (!room) break;
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// observeLost(): records dropped per vring because JS fell behind.
Napi::Value NetDevice::ObserveLost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& observers = cfg_->observers;
  Napi::Array a = Napi::Array::New(env, observers.size());
  for (uint32_t v = 0; v < observers.size(); v++) {
    double lost = observers[v]
                      ? static_cast<double>(observers[v]->ring.lost.load(std::memory_order_relaxed))
                      : 0;
    a.Set(v, Napi::Number::New(env, lost));
  }
  return a;
}

}  // namespace vun
