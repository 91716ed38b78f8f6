// The per-vring calls of the data plane's JS surface: start and stop a vring, push its enable
// state and call fd, read where every ring is. Each applies through Reconfigure on the threads
// that run the vring's pair only.
#include "env_state.h"
#include "errors.h"
#include "napi_values.h"
#include "net_device.h"
#include "net_rules.h"

namespace vun {

// startQueue(index, {num, desc, avail, used: bigint VAs, logGuestAddr: bigint GPA or -1n,
// lastAvailIdx, usedIdx, kickFd, callFd, enabled, journal?: {mappingId, offset}}). With
// VIRTIO_F_RING_PACKED acked the ring is packed: desc, avail, used are its descriptor ring, driver
// area and device area, and both positions are position | wrap counter << 15.
Napi::Value NetDevice::StartQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t index = U32(info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  if (index >= cfg_->queues.size()) {
    ThrowArg(env, "startQueue: index out of range");
    return env.Undefined();
  }
  // journal: {mappingId, offset}: the ring's record in the --ring-state file (packed rings).
  RingJournal* journal = nullptr;
  if (o.Has("journal") && o.Get("journal").IsObject()) {
    Napi::Object j = o.Get("journal").As<Napi::Object>();
    EnvState* st = GetState(env);
    auto it = st->mappings.find(U32(j.Get("mappingId")));
    const uint64_t off = U32(j.Get("offset"));
    if (it == st->mappings.end() || off % 8 != 0 || off + RingJournal::kStride > it->second.size) {
      ThrowArg(env, "startQueue: journal outside its mapping");
      return env.Undefined();
    }
    journal = reinterpret_cast<RingJournal*>(static_cast<uint8_t*>(it->second.base) +
                                             it->second.delta + off);
  }
  const uint32_t pair = index / 2;
  Reconfigure(static_cast<int32_t>(pair), [&] {
    QueueState& q = cfg_->queues[index];
    q.cfg.num = static_cast<uint16_t>(U32(o.Get("num")));
    q.cfg.descVa = BigU64(o.Get("desc"));
    q.cfg.availVa = BigU64(o.Get("avail"));
    q.cfg.usedVa = BigU64(o.Get("used"));
    q.cfg.packed = cfg_->Has(kFRingPacked);
    q.cfg.eventIdx = cfg_->Has(kFEventIdx);
    q.cfg.indirect = cfg_->Has(kFIndirect);
    q.cfg.notifyOnEmpty = cfg_->Has(kFNotifyOnEmpty);
    q.cfg.journal = q.cfg.packed ? journal : nullptr;
    // logGuestAddr: -1n when the vring did not ask for used ring logging (VHOST_VRING_F_LOG).
    bool lossless;
    int64_t logAddr = o.Get("logGuestAddr").As<Napi::BigInt>().Int64Value(&lossless);
    q.cfg.logUsed = logAddr != -1;
    q.cfg.logGuestAddr = q.cfg.logUsed ? static_cast<uint64_t>(logAddr) : 0;
    q.lastAvailIdx = static_cast<uint16_t>(U32(o.Get("lastAvailIdx")));
    // The session decided where the ring resumes (split: used->idx as it read it from guest
    // memory; packed: as the front-end said): taken as given.
    q.usedIdx = static_cast<uint16_t>(U32(o.Get("usedIdx")));
    q.kickFd = o.Get("kickFd").As<Napi::Number>().Int32Value();
    q.callFd = o.Get("callFd").As<Napi::Number>().Int32Value();
    q.enabled = o.Get("enabled").ToBoolean();
    q.broken = false;
    q.error = 0;
    q.started = true;
    cfg_->Publish(index, q.lastAvailIdx, q.usedIdx);
    if (index % 2 == 0) steering_->SetReceiveReady(pair, q.enabled);
  });
  return env.Undefined();
}

// stopQueue(index) -> {lastAvailIdx, usedIdx, broken, error}
Napi::Value NetDevice::StopQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t index = U32(info[0]);
  if (index >= cfg_->queues.size()) {
    ThrowArg(env, "stopQueue: index out of range");
    return env.Undefined();
  }
  QueueState& q = cfg_->queues[index];
  Reconfigure(static_cast<int32_t>(index / 2), [&] {
    q.started = false;
    q.kickFd = q.callFd = -1;
    if (index % 2 == 0) steering_->SetReceiveReady(index / 2, false);
  });
  Napi::Object r = Napi::Object::New(env);
  r.Set("lastAvailIdx", q.lastAvailIdx);
  r.Set("usedIdx", q.usedIdx);
  r.Set("broken", q.broken);
  r.Set("error", q.error);
  return r;
}

// setEnabled(index, enabled): the effective enable state, pushed by the session.
Napi::Value NetDevice::SetEnabled(const Napi::CallbackInfo& info) {
  uint32_t index = U32(info[0]);
  bool enabled = info[1].ToBoolean();
  if (index < cfg_->queues.size()) {
    Reconfigure(static_cast<int32_t>(index / 2), [&] {
      QueueState& q = cfg_->queues[index];
      q.enabled = enabled;
      if (index % 2 == 0) steering_->SetReceiveReady(index / 2, q.started && enabled);
    });
  }
  return info.Env().Undefined();
}

Napi::Value NetDevice::SetCall(const Napi::CallbackInfo& info) {
  uint32_t index = U32(info[0]);
  int fd = info[1].As<Napi::Number>().Int32Value();
  if (index < cfg_->queues.size())
    Reconfigure(static_cast<int32_t>(index / 2), [&] { cfg_->queues[index].callFd = fd; });
  return info.Env().Undefined();
}

// positions() -> [{lastAvailIdx, usedIdx}] per vring: where each ring is (running rings as
// their thread last published it).
Napi::Value NetDevice::Positions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env, cfg_->queues.size());
  for (uint32_t v = 0; v < cfg_->queues.size(); v++) {
    uint32_t p = cfg_->live[v].load(std::memory_order_relaxed);
    Napi::Object o = Napi::Object::New(env);
    o.Set("lastAvailIdx", p & 0xffff);
    o.Set("usedIdx", p >> 16);
    a.Set(v, o);
  }
  return a;
}

}  // namespace vun
