// The observation and fault calls of the data plane's JS surface: the threads write records
// (captured frames, ring steps, injected faults) into one SPSC ring per vring (observe.h); the
// JS thread drains them here. setFaults hands the threads a compiled fault plan (faults.h).
#include <cstring>

#include "errors.h"
#include "napi_values.h"
#include "net_device.h"

namespace vun {

// setObserve({capture, trace, faults, snapLen, bytes}): per-vring observation rings of `bytes`
// each (capture: frames cut to snapLen; trace: ring steps; faults: injected faults). All false
// turns observation off.
Napi::Value NetDevice::SetObserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) {
    ThrowArg(env, "setObserve({capture, trace, snapLen, bytes})");
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  bool capture = o.Get("capture").ToBoolean();
  bool trace = o.Get("trace").ToBoolean();
  bool faults = o.Get("faults").ToBoolean();
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
    if (!capture && !trace && !faults) return;
    for (uint32_t v = 0; v < cfg_->queues.size(); v++)
      cfg_->observers.emplace_back(
          new VringObserver(static_cast<uint16_t>(v), bytes, capture, trace, snap, faults));
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

// setFaults(seed, rules[{rule, vring, action, every, after, count, always, threshold, atNs,
// untilNs, mode, field, value, jitterNs, gP, gR, gH, gK}]): a compiled plan (src/faults/plan.ts);
// [] clears it. Event counts and firings start again from zero; time windows count from the
// device's start.
Napi::Value NetDevice::SetFaults(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsArray()) {
    ThrowArg(env, "setFaults(seed, rules[])");
    return env.Undefined();
  }
  const uint32_t seed = U32(info[0]);
  Napi::Array arr = info[1].As<Napi::Array>();
  const uint32_t vrings = static_cast<uint32_t>(cfg_->queues.size());
  std::vector<std::unique_ptr<VringFaults>> tables(vrings);
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    const uint32_t v = U32(o.Get("vring"));
    if (v >= vrings) {
      ThrowArg(env, "setFaults: vring out of range");
      return env.Undefined();
    }
    if (!tables[v]) {
      tables[v].reset(new VringFaults());
      tables[v]->seed = seed;
      tables[v]->vring = v;
      tables[v]->startNs = startNs_;
    }
    FaultRule r;
    r.rule = static_cast<uint16_t>(U32(o.Get("rule")));
    r.action = static_cast<uint8_t>(U32(o.Get("action")));
    r.mode = static_cast<uint8_t>(U32(o.Get("mode")));
    r.field = static_cast<uint8_t>(U32(o.Get("field")));
    r.every = U32(o.Get("every"));
    r.after = U32(o.Get("after"));
    r.count = U32(o.Get("count"));
    r.always = o.Get("always").ToBoolean();
    r.threshold = r.always ? 0 : BigU64(o.Get("threshold"));
    r.atNs = static_cast<int64_t>(BigU64(o.Get("atNs")));
    r.untilNs = static_cast<int64_t>(BigU64(o.Get("untilNs")));
    r.value = BigU64(o.Get("value"));
    r.jitterNs = BigU64(o.Get("jitterNs"));
    r.holdNs = static_cast<int64_t>(BigU64(o.Get("holdNs")));
    r.paceNs = static_cast<int64_t>(BigU64(o.Get("paceNs")));
    r.gP = BigU64(o.Get("gP"));
    r.gR = BigU64(o.Get("gR"));
    r.gH = BigU64(o.Get("gH"));
    r.gK = BigU64(o.Get("gK"));
    if (r.every == 0 || r.action < kFaultDrop || r.action > kFaultUsedWrap) {
      ThrowArg(env, "setFaults: a rule with every 0 or an unknown action");
      return env.Undefined();
    }
    tables[v]->rules.push_back(r);
  }
  Reconfigure(kAllPairs, [&] { cfg_->faults = std::move(tables); });
  return env.Undefined();
}

}  // namespace vun
