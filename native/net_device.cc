#include "net_device.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "env_state.h"
#include "errors.h"
#include "napi_values.h"
#include "net_rules.h"

namespace vun {

Napi::Function NetDevice::Init(Napi::Env env) {
  return DefineClass(env, "NetDevice",
                     {
                         InstanceMethod<&NetDevice::SetMemory>("setMemory"),
                         InstanceMethod<&NetDevice::SetFeatures>("setFeatures"),
                         InstanceMethod<&NetDevice::SetLog>("setLog"),
                         InstanceMethod<&NetDevice::SetRingLog>("setRingLog"),
                         InstanceMethod<&NetDevice::SetHost>("setHost"),
                         InstanceMethod<&NetDevice::SetSteering>("setSteering"),
                         InstanceMethod<&NetDevice::SetCpus>("setCpus"),
                         InstanceMethod<&NetDevice::SetThreads>("setThreads"),
                         InstanceMethod<&NetDevice::SetPoll>("setPoll"),
                         InstanceMethod<&NetDevice::SetCoalesce>("setCoalesce"),
                         InstanceMethod<&NetDevice::SetObserve>("setObserve"),
                         InstanceMethod<&NetDevice::DrainObserve>("drainObserve"),
                         InstanceMethod<&NetDevice::SetFaults>("setFaults"),
                         InstanceMethod<&NetDevice::ObserveLost>("observeLost"),
                         InstanceMethod<&NetDevice::StartQueue>("startQueue"),
                         InstanceMethod<&NetDevice::StopQueue>("stopQueue"),
                         InstanceMethod<&NetDevice::SetEnabled>("setEnabled"),
                         InstanceMethod<&NetDevice::SetCall>("setCall"),
                         InstanceMethod<&NetDevice::Positions>("positions"),
                         InstanceMethod<&NetDevice::Pause>("pause"),
                         InstanceMethod<&NetDevice::Resume>("resume"),
                         InstanceMethod<&NetDevice::Close>("close"),
                     });
}

// new NetDevice(queuePairs, counters: BigUint64Array over a SharedArrayBuffer, onEvent)
NetDevice::NetDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NetDevice>(info) {
  Napi::Env env = info.Env();
  uint32_t pairs = info[0].IsNumber() ? U32(info[0]) : 0;
  // 64: Steering keeps one readiness bit per pair in a u64.
  if (pairs == 0 || pairs > 64 || !info[1].IsTypedArray() || !info[2].IsFunction()) {
    ThrowArg(env, "NetDevice(queuePairs 1..64, counters, onEvent)");
    return;
  }
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  napi_get_typedarray_info(env, ta, &type, &length, &data, &ab, &offset);
  if (type != napi_biguint64_array || length < size_t(pairs) * 2 * kCountersPerVring) {
    ThrowArg(env, "counters must be a BigUint64Array of queuePairs * 2 * countersPerVring slots");
    return;
  }
  cfg_.reset(new DeviceConfig(pairs));
  startNs_ = MonotonicNs();
  cfg_->counters = static_cast<uint64_t*>(data);
  countersRef_ = Napi::Persistent(info[1]);
  steering_.reset(new Steering(pairs));
  for (uint32_t p = 0; p < pairs; p++)
    pairs_.emplace_back(new QueuePair(*cfg_, *steering_, *this, p));
  std::vector<uint32_t> identity(pairs);
  for (uint32_t p = 0; p < pairs; p++) identity[p] = p;
  BuildThreads(identity);
  GetState(env)->devices.insert(this);
  env_ = env;
  events_ = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(),
                                          "vhost-user-net:device-events", 0, 1);
  events_.Unref(env);
}

NetDevice::~NetDevice() {
  Shutdown();
  EnvState* st = GetState(Napi::Env(env_));
  if (st) st->devices.erase(this);
}

void NetDevice::Shutdown() {
  if (closed_ || !cfg_) return;
  ForThreads(kAllPairs, [](WorkerThread& t) { t.Stop(); });
  closed_ = true;
  events_.Release();
  // Threads first (each joined), then what they used: the steering's eventfds close here, not
  // when the GC gets to this object.
  threads_.clear();
  pairs_.clear();
  steering_.reset();
}

// Hands a report from a data-plane thread to the JS thread (never blocks; dropped if the
// environment is going away).
void NetDevice::Post(Event* ev) {
  napi_status s = events_.NonBlockingCall(ev, [](Napi::Env env, Napi::Function fn, Event* e) {
    if (env != nullptr && fn != nullptr) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("kind", e->kind);
      if (std::strcmp(e->kind, "vringBroken") == 0) {
        o.Set("vring", e->a);
        o.Set("error", static_cast<double>(e->b));
        o.Set("name", RingErrorName(static_cast<uint32_t>(e->b)));
      } else {
        o.Set("thread", e->a);
        o.Set("cpu", static_cast<double>(e->b));
        o.Set("errno", ErrnoName(static_cast<int>(e->c)));
      }
      fn.Call({o});
    }
    delete e;
  });
  if (s != napi_ok) delete ev;
}

void NetDevice::VringBroken(uint32_t vring, uint32_t error) {
  Post(new Event{"vringBroken", vring, error, 0});
}

void NetDevice::PinFailed(uint32_t thread, int cpu, int err) {
  Post(new Event{"pinFailed", thread, cpu, err});
}

// Groups pairs into threads: pair p runs on thread threadOf[p].
void NetDevice::BuildThreads(const std::vector<uint32_t>& threadOf) {
  threads_.clear();  // each joins its thread first
  threadOf_ = threadOf;
  uint32_t n = 0;
  for (uint32_t t : threadOf) n = std::max(n, t + 1);
  for (uint32_t t = 0; t < n; t++) threads_.emplace_back(new WorkerThread(*cfg_, *this, t));
  for (uint32_t p = 0; p < threadOf.size(); p++)
    threads_[threadOf[p]]->pairs.push_back(pairs_[p].get());
}

// Each pair's host port, configured for the negotiated header and offloads.
void NetDevice::ApplyHostConfig() {
  const unsigned offloads = TapOffloads(cfg_->features);
  for (uint32_t p = 0; p < cfg_->pairs; p++) {
    if (!pairs_[p]->port()) continue;
    pairs_[p]->port()->Configure(cfg_->hdrLen, offloads);
  }
}

// setPoll(us): busy-poll this many microseconds after the last frame before sleeping.
Napi::Value NetDevice::SetPoll(const Napi::CallbackInfo& info) {
  uint32_t us = U32(info[0]);
  Reconfigure(kAllPairs, [&] { cfg_->pollUs = us; });
  return info.Env().Undefined();
}

// setCoalesce(mode, usecs, frames): interrupt coalescing for every vring without a fault plan
// (coalesce.h; mode 0 off, 1 static, 2 adaptive).
Napi::Value NetDevice::SetCoalesce(const Napi::CallbackInfo& info) {
  CoalesceConfig c;
  c.mode = static_cast<uint8_t>(U32(info[0]));
  c.usecs = U32(info[1]);
  c.frames = U32(info[2]);
  if (c.mode > kCoalesceAdaptive) {
    Napi::RangeError::New(info.Env(), "setCoalesce: mode is 0, 1 or 2")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Reconfigure(kAllPairs, [&] { cfg_->coalesce = c; });
  return info.Env().Undefined();
}

// setCpus(cpus: number[]): pin thread t to cpus[t % length] (empty: no pinning). A CPU
// outside this process's allowed set is refused here (EINVAL), not ignored.
Napi::Value NetDevice::SetCpus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array arr = info[0].As<Napi::Array>();
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    ThrowErrno(env, "sched_getaffinity", errno);
    return env.Undefined();
  }
  std::vector<int> cpus;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    int cpu = arr.Get(i).As<Napi::Number>().Int32Value();
    if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) {
      ThrowErrno(env, "sched_setaffinity", EINVAL,
                 "CPU " + std::to_string(cpu) + " is not in this process's CPU set");
      return env.Undefined();
    }
    cpus.push_back(cpu);
  }
  Reconfigure(kAllPairs, [&] { cfg_->cpus = std::move(cpus); });
  return env.Undefined();
}

// setSteering(policy: 0 none | 1 toeplitz | 2 flow-affinity, key: Buffer(40), table: number[])
Napi::Value NetDevice::SetSteering(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t policy = U32(info[0]);
  auto key = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Array table = info[2].As<Napi::Array>();
  if (policy > 2 || key.Length() != 40 || table.Length() == 0 || table.Length() > 128) {
    ThrowArg(env, "setSteering(policy 0..2, key[40], table[1..128])");
    return env.Undefined();
  }
  std::vector<uint16_t> t(table.Length());
  for (uint32_t i = 0; i < t.size(); i++) t[i] = static_cast<uint16_t>(U32(table.Get(i)));
  Reconfigure(kAllPairs, [&] {
    steering_->Configure(static_cast<SteerPolicy>(policy), key.Data(), t.data(),
                         static_cast<uint32_t>(t.size()));
  });
  return env.Undefined();
}

// setThreads(threadOf: number[]): pair p runs on thread threadOf[p] (one entry per pair).
Napi::Value NetDevice::SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array arr = info[0].As<Napi::Array>();
  const uint32_t pairs = cfg_->pairs;
  if (arr.Length() != pairs) {
    ThrowArg(env, "setThreads: one thread index per queue pair");
    return env.Undefined();
  }
  std::vector<uint32_t> threadOf(pairs);
  for (uint32_t p = 0; p < pairs; p++) {
    threadOf[p] = U32(arr.Get(p));
    if (threadOf[p] >= pairs) {
      ThrowArg(env, "setThreads: thread index out of range");
      return env.Undefined();
    }
  }
  Reconfigure(kAllPairs, [&] { BuildThreads(threadOf); });
  return env.Undefined();
}

// setMemory([{mappingId, gpa, size, va}]): the regions the rings and buffers live in.
Napi::Value NetDevice::SetMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array arr = info[0].As<Napi::Array>();
  EnvState* st = GetState(env);
  GuestMemory m;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    uint32_t id = U32(o.Get("mappingId"));
    auto it = st->mappings.find(id);
    if (it == st->mappings.end()) {
      ThrowErrno(env, "setMemory", EINVAL, "unknown mapping " + std::to_string(id));
      return env.Undefined();
    }
    m.regions.push_back(GuestRegion{BigU64(o.Get("gpa")), BigU64(o.Get("size")),
                                    BigU64(o.Get("va")),
                                    static_cast<uint8_t*>(it->second.base) + it->second.delta});
  }
  Reconfigure(kAllPairs, [&] { cfg_->mem = std::move(m); });
  return env.Undefined();
}

// setLog(mappingId | -1): the dirty log area (SET_LOG_BASE), or none. The threads stop, take
// the new area and start again: none writes the old one after this returns, so the caller
// may unmap it.
Napi::Value NetDevice::SetLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t id = info[0].As<Napi::Number>().Int64Value();
  LogArea a;
  if (id >= 0) {
    EnvState* st = GetState(env);
    auto it = st->mappings.find(static_cast<uint32_t>(id));
    if (it == st->mappings.end()) {
      ThrowErrno(env, "setLog", EINVAL, "unknown mapping " + std::to_string(id));
      return env.Undefined();
    }
    a.base = static_cast<uint8_t*>(it->second.base) + it->second.delta;
    a.size = it->second.size;
  }
  Reconfigure(kAllPairs, [&] { cfg_->log = a; });
  return env.Undefined();
}

// setRingLog(index, logGuestAddr: bigint | -1n): log vring `index`'s used ring writes at this
// guest address (VHOST_VRING_F_LOG), or stop logging them. Applied on the vring's thread only.
Napi::Value NetDevice::SetRingLog(const Napi::CallbackInfo& info) {
  uint32_t index = U32(info[0]);
  bool lossless;
  int64_t addr = info[1].As<Napi::BigInt>().Int64Value(&lossless);
  if (index < cfg_->queues.size()) {
    Reconfigure(static_cast<int32_t>(index / 2), [&] {
      RingConfig& c = cfg_->queues[index].cfg;
      c.logUsed = addr != -1;
      c.logGuestAddr = c.logUsed ? static_cast<uint64_t>(addr) : 0;
    });
  }
  return info.Env().Undefined();
}

// setFeatures(features: bigint): header size, ring options and host offloads follow.
Napi::Value NetDevice::SetFeatures(const Napi::CallbackInfo& info) {
  uint64_t f = BigU64(info[0]);
  Reconfigure(kAllPairs, [&] {
    cfg_->features = f;
    cfg_->hdrLen = HeaderLen(f);
    for (auto& q : cfg_->queues) {
      q.cfg.eventIdx = HasFeature(f, kFEventIdx);
      q.cfg.indirect = HasFeature(f, kFIndirect);
      q.cfg.notifyOnEmpty = HasFeature(f, kFNotifyOnEmpty);
    }
    ApplyHostConfig();
  });
  return info.Env().Undefined();
}

// setHost(kind, fds[], sourceLen, flags): kind 0 null, 1 loopback, 2 tap, 3 af-packet; flags
// bit 0: TAP writes may go in io_uring batches (kHostTapIoUring); bit 1: only when that costs
// less per frame on this machine (kHostTapChoose, write_chooser.h).
Napi::Value NetDevice::SetHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t kind = U32(info[0]);
  Napi::Array fds = info[1].As<Napi::Array>();
  if (kind > 3) {
    ThrowArg(env, "setHost(kind 0..3, fds, sourceLen)");
    return env.Undefined();
  }
  Reconfigure(kAllPairs, [&] {
    host_ = static_cast<HostKind>(kind);
    hostFds_.clear();
    for (uint32_t i = 0; i < fds.Length(); i++)
      hostFds_.push_back(fds.Get(i).As<Napi::Number>().Int32Value());
    sourceLen_ = U32(info[2]);
    hostFlags_ = info.Length() > 3 ? U32(info[3]) : 0;
    for (uint32_t p = 0; p < cfg_->pairs; p++)
      pairs_[p]->SetPort(
          MakeHostPort(host_, p < hostFds_.size() ? hostFds_[p] : -1, sourceLen_, hostFlags_));
    ApplyHostConfig();
  });
  return env.Undefined();
}

Napi::Value NetDevice::Pause(const Napi::CallbackInfo& info) {
  paused_ = true;
  ForThreads(kAllPairs, [](WorkerThread& t) { t.Stop(); });
  return info.Env().Undefined();
}

Napi::Value NetDevice::Resume(const Napi::CallbackInfo& info) {
  paused_ = false;
  Reconfigure(kAllPairs, [] {});
  return info.Env().Undefined();
}

Napi::Value NetDevice::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

// allowedCpus() -> number[]: the CPUs this process may run on (sched_getaffinity), for checking
// --cpus at start-up.
static Napi::Value AllowedCpus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    ThrowErrno(env, "sched_getaffinity", errno);
    return env.Undefined();
  }
  Napi::Array a = Napi::Array::New(env);
  for (int c = 0, n = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) a.Set(n++, Napi::Number::New(env, c));
  return a;
}

void InitNetDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("NetDevice", NetDevice::Init(env));
  exports.Set("allowedCpus", Napi::Function::New<AllowedCpus>(env));
  Napi::Array names = Napi::Array::New(env);
  for (uint32_t i = 0; i < kRingErrorCount; i++)
    names.Set(i, Napi::String::New(env, RingErrorName(i)));
  exports.Set("ringErrorNames", names);
  Napi::Array counters = Napi::Array::New(env);
  for (uint32_t i = 0; i < kCountersPerVring; i++)
    counters.Set(i, Napi::String::New(env, CounterName(i)));
  exports.Set("counterNames", counters);
  exports.Set("countersPerVring", Napi::Number::New(env, kCountersPerVring));
}

}  // namespace vun
