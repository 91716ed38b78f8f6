// The test-only native surface: the C++ rings (split and packed) driven one call at a time
// (RingModel), the RSS path, and the virtio-net device rules (net_rules.h). Only tests use it, to
// hold the C++ code to known answers and to the TS reference; one JS call per operation is fine
// there, never on the data path.
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "coalesce.h"
#include "env_state.h"
#include "errors.h"
#include "exports.h"
#include "faults.h"
#include "napi_values.h"
#include "net_rules.h"
#include "rss.h"
#include "vring.h"
#include "write_chooser.h"

namespace vun {
namespace {

class RingModel : public Napi::ObjectWrap<RingModel> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(
        env, "RingModel",
        {InstanceMethod<&RingModel::PopBurst>("popBurst"), InstanceMethod<&RingModel::Fill>("fill"),
         InstanceMethod<&RingModel::Flush>("flush"),
         InstanceMethod<&RingModel::NeedNotify>("needNotify"),
         InstanceMethod<&RingModel::SetNotification>("setNotification"),
         InstanceMethod<&RingModel::Rewind>("rewind"), InstanceMethod<&RingModel::State>("state"),
         InstanceMethod<&RingModel::SyncLog>("syncLog"),
         InstanceMethod<&RingModel::DrainTrace>("drainTrace")});
  }

  // new RingModel(regions[{mappingId, gpa, size, va}], {num, desc, avail, used, packed,
  //               eventIdx, indirect, notifyOnEmpty, lastAvailIdx, usedIdx})
  explicit RingModel(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<RingModel>(info), segs_(kBurstSegs) {
    Napi::Env env = info.Env();
    Napi::Array arr = info[0].As<Napi::Array>();
    EnvState* st = GetState(env);
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Object o = arr.Get(i).As<Napi::Object>();
      auto it = st->mappings.find(o.Get("mappingId").As<Napi::Number>().Uint32Value());
      if (it == st->mappings.end()) {
        ThrowArg(env, "RingModel: unknown mapping");
        return;
      }
      mem_.regions.push_back(
          GuestRegion{BigU64(o.Get("gpa")), BigU64(o.Get("size")), BigU64(o.Get("va")),
                      static_cast<uint8_t*>(it->second.base) + it->second.delta});
    }
    Napi::Object c = info[1].As<Napi::Object>();
    RingConfig cfg;
    cfg.num = static_cast<uint16_t>(c.Get("num").As<Napi::Number>().Uint32Value());
    cfg.descVa = BigU64(c.Get("desc"));
    cfg.availVa = BigU64(c.Get("avail"));
    cfg.usedVa = BigU64(c.Get("used"));
    cfg.packed = c.Get("packed").ToBoolean();
    cfg.inOrderBatch = c.Get("inOrderBatch").ToBoolean();
    cfg.eventIdx = c.Get("eventIdx").ToBoolean();
    cfg.indirect = c.Get("indirect").ToBoolean();
    cfg.notifyOnEmpty = c.Get("notifyOnEmpty").ToBoolean();
    // log: {mappingId, logGuestAddr?}: the dirty log on, used ring logged when an address is given.
    if (c.Has("log") && c.Get("log").IsObject()) {
      Napi::Object l = c.Get("log").As<Napi::Object>();
      auto it = st->mappings.find(l.Get("mappingId").As<Napi::Number>().Uint32Value());
      if (it == st->mappings.end()) {
        ThrowArg(env, "RingModel: unknown log mapping");
        return;
      }
      ring_.SetLogArea(
          LogArea{static_cast<uint8_t*>(it->second.base) + it->second.delta, it->second.size});
      if (l.Has("logGuestAddr") && l.Get("logGuestAddr").IsBigInt()) {
        cfg.logUsed = true;
        cfg.logGuestAddr = BigU64(l.Get("logGuestAddr"));
      }
    }
    // journal: {mappingId, offset}: the ring's record (ring_journal.h).
    if (c.Has("journal") && c.Get("journal").IsObject()) {
      Napi::Object j = c.Get("journal").As<Napi::Object>();
      auto it = st->mappings.find(j.Get("mappingId").As<Napi::Number>().Uint32Value());
      const uint32_t off = j.Get("offset").As<Napi::Number>().Uint32Value();
      if (it == st->mappings.end() || off + RingJournal::kStride > it->second.size) {
        ThrowArg(env, "RingModel: journal outside its mapping");
        return;
      }
      cfg.journal = reinterpret_cast<RingJournal*>(static_cast<uint8_t*>(it->second.base) +
                                                   it->second.delta + off);
    }
    if (c.Get("trace").ToBoolean()) {
      trace_.reset(new VringObserver(0, 1u << 20, false, true, 0));
      ring_.SetTrace(trace_.get());
    }
    ring_.Attach(mem_, cfg,
                 static_cast<uint16_t>(c.Get("lastAvailIdx").As<Napi::Number>().Uint32Value()),
                 static_cast<uint16_t>(c.Get("usedIdx").As<Napi::Number>().Uint32Value()));
  }

 private:
  Napi::Value PopBurst(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t max = info[0].As<Napi::Number>().Uint32Value();
    if (max > kMaxBurst) max = kMaxBurst;
    Element elems[kMaxBurst];
    uint32_t n = ring_.PopBurst(elems, max, segs_.data());
    Napi::Array out = Napi::Array::New(env, n);
    for (uint32_t i = 0; i < n; i++) {
      const Element& e = elems[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("head", e.head);
      o.Set("slots", e.slots);
      auto segs = [&](uint32_t from, uint32_t count) {
        Napi::Array a = Napi::Array::New(env, count);
        for (uint32_t k = 0; k < count; k++) {
          Napi::Array pair = Napi::Array::New(env, 2);
          pair.Set(uint32_t(0), Napi::BigInt::New(env, e.segs[from + k].gpa));
          pair.Set(uint32_t(1), Napi::Number::New(env, e.segs[from + k].len));
          a.Set(k, pair);
        }
        return a;
      };
      o.Set("out", segs(0, e.outNum));
      o.Set("in", segs(e.outNum, e.inNum));
      o.Set("outLen", Napi::Number::New(env, static_cast<double>(e.outLen)));
      o.Set("inLen", Napi::Number::New(env, static_cast<double>(e.inLen)));
      out.Set(i, o);
    }
    return out;
  }
  Napi::Value Fill(const Napi::CallbackInfo& info) {
    ring_.Fill(
        info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value(),
        static_cast<uint16_t>(info[2].As<Napi::Number>().Uint32Value()),
        static_cast<uint16_t>(info[3].IsNumber() ? info[3].As<Napi::Number>().Uint32Value() : 1));
    return info.Env().Undefined();
  }
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    ring_.Flush(static_cast<uint16_t>(info[0].As<Napi::Number>().Uint32Value()));
    return info.Env().Undefined();
  }
  Napi::Value NeedNotify(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), ring_.NeedNotify());
  }
  Napi::Value SetNotification(const Napi::CallbackInfo& info) {
    ring_.SetNotification(info[0].ToBoolean());
    return info.Env().Undefined();
  }
  // What a stop does (QueuePair::Teardown): marks still cached reach the log.
  Napi::Value SyncLog(const Napi::CallbackInfo& info) {
    if (ring_.Log().On()) ring_.Log().Sync();
    return info.Env().Undefined();
  }
  Napi::Value Rewind(const Napi::CallbackInfo& info) {
    ring_.Rewind(static_cast<uint16_t>(info[0].As<Napi::Number>().Uint32Value()));
    return info.Env().Undefined();
  }
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("lastAvailIdx", ring_.LastAvailIdx());
    o.Set("shadowAvailIdx", ring_.ShadowAvailIdx());
    o.Set("usedIdx", ring_.UsedIdx());
    o.Set("signalledUsed", ring_.SignalledUsed());
    o.Set("signalledUsedValid", ring_.SignalledUsedValid());
    o.Set("broken", ring_.Broken());
    o.Set("error", ring_.Error());
    return o;
  }

  // drainTrace() -> Buffer of [u32 len][record]... (the ring trace records, as NetDevice's).
  Napi::Value DrainTrace(const Napi::CallbackInfo& info) {
    std::vector<uint8_t> out;
    if (trace_) {
      trace_->ring.Drain([&](const uint8_t* rec, uint32_t len) {
        const uint8_t* l = reinterpret_cast<const uint8_t*>(&len);
        out.insert(out.end(), l, l + 4);
        out.insert(out.end(), rec, rec + len);
        return true;
      });
    }
    return Napi::Buffer<uint8_t>::Copy(info.Env(), out.data(), out.size());
  }

  GuestMemory mem_;
  std::unique_ptr<VringObserver> trace_;
  Vring ring_;
  std::vector<Segment> segs_;
};

}  // namespace

// rssHash(key: Buffer, frame: Buffer, table: number[]) -> {hash, type, pair}: the C++ RSS path,
// for tests that hold it to the TS reference and the published vectors.
Napi::Value RssHash(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  auto frame = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Array table = info[2].As<Napi::Array>();
  if (key.Length() != 40 || table.Length() == 0 || table.Length() > 128) {
    ThrowArg(env, "rssHash(key[40], frame, table[1..128])");
    return env.Undefined();
  }
  RssConfig c;
  std::memcpy(c.key, key.Data(), 40);
  c.tableSize = table.Length();
  for (uint32_t i = 0; i < c.tableSize; i++)
    c.table[i] = static_cast<uint16_t>(table.Get(i).As<Napi::Number>().Uint32Value());
  uint8_t in[36];
  HashType t;
  FlowInput(frame.Data(), frame.Length(), in, &t);
  uint32_t h = 0;
  uint32_t pair = RssPair(c, frame.Data(), frame.Length(), &h);
  Napi::Object o = Napi::Object::New(env);
  o.Set("hash", Napi::Number::New(env, h));
  o.Set("type", Napi::Number::New(env, t));
  o.Set("pair", Napi::Number::New(env, pair));
  return o;
}

// toeplitz(key, input) -> u32: the bare hash (vector tests).
Napi::Value ToeplitzJs(const Napi::CallbackInfo& info) {
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  auto in = info[1].As<Napi::Buffer<uint8_t>>();
  return Napi::Number::New(info.Env(), Toeplitz(key.Data(), key.Length(), in.Data(), in.Length()));
}

// netRules: the device rules of net_rules.h, one function each, for test/net-rules.test.ts.
Napi::Object NetRules(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  auto u32 = [](const Napi::Value& v) { return v.As<Napi::Number>().Uint32Value(); };
  auto f64 = [](const Napi::Value& v) {
    return static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue());
  };
  o.Set("headerLen", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
          return Napi::Number::New(i.Env(), HeaderLen(BigU64(i[0])));
        }));
  o.Set("numBuffersOffset", Napi::Function::New(env, [u32](const Napi::CallbackInfo& i) {
          return Napi::Number::New(i.Env(), NumBuffersOffset(u32(i[0])));
        }));
  o.Set("receiveRule", Napi::Function::New(env, [u32](const Napi::CallbackInfo& i) {
          return Napi::Number::New(i.Env(),
                                   ReceiveRule(BigU64(i[0]), static_cast<uint8_t>(u32(i[1])),
                                               static_cast<uint8_t>(u32(i[2]))));
        }));
  o.Set("tapOffloads", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
          return Napi::Number::New(i.Env(), TapOffloads(BigU64(i[0])));
        }));
  o.Set("receiveChainRule", Napi::Function::New(env, [u32, f64](const Napi::CallbackInfo& i) {
          return Napi::Number::New(
              i.Env(), ReceiveChainRule(BigU64(i[0]), u32(i[1]), f64(i[2]), f64(i[3]), u32(i[4])));
        }));
  o.Set("faultDraw", Napi::Function::New(env, [u32](const Napi::CallbackInfo& i) {
          return Napi::BigInt::New(i.Env(), Draw(u32(i[0]), u32(i[1]), u32(i[2]), BigU64(i[3])));
        }));
  o.Set("recordsFlow", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
          return Napi::Boolean::New(i.Env(), RecordsFlow(i[0].ToBoolean(), i[1].ToBoolean()));
        }));
  return o;
}

// coalesceRun({mode, usecs, frames}, steps): drives one Coalescer (coalesce.h) with a clock of
// the test's own. A step is [op, atUs, frames, asked] (op 0 a flush, 1 the timer, 2 a stop);
// the answer per step is 'none' | 'send N' | 'hold' | 'join' | 'wait' for a flush, 'send N' or
// '-' for the timer and a stop (N: the used entries the interrupt announced).
Napi::Value CoalesceRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  CoalesceConfig c;
  c.mode = static_cast<uint8_t>(o.Get("mode").As<Napi::Number>().Uint32Value());
  c.usecs = o.Get("usecs").As<Napi::Number>().Uint32Value();
  c.frames = o.Get("frames").As<Napi::Number>().Uint32Value();
  Napi::Array steps = info[1].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env, steps.Length());
  Coalescer k;
  k.Reset();
  auto sent = [&k]() { return "send " + std::to_string(k.SentFrames()); };
  for (uint32_t i = 0; i < steps.Length(); i++) {
    Napi::Array st = steps.Get(i).As<Napi::Array>();
    const uint32_t op = st.Get(0u).As<Napi::Number>().Uint32Value();
    const int64_t now = static_cast<int64_t>(st.Get(1u).As<Napi::Number>().DoubleValue() * 1000);
    std::string r;
    if (op == 0) {
      const uint32_t frames = st.Get(2u).As<Napi::Number>().Uint32Value();
      switch (k.Flushed(c, now, frames, st.Get(3u).ToBoolean())) {
        case Coalescer::kNone:
          r = "none";
          break;
        case Coalescer::kSend:
          r = sent();
          break;
        case Coalescer::kHold:
          r = "hold";
          break;
        case Coalescer::kJoin:
          r = "join";
          break;
        case Coalescer::kWait:
          r = "wait";
          break;
      }
    } else {
      r = (op == 1 ? k.Due(now) : k.Stop(now)) ? sent() : "-";
    }
    out.Set(i, Napi::String::New(env, r));
  }
  return out;
}

// writeChooserRun(fixed: -1 | 0 | 1, bursts: [frames, plainNsPerFrame, uringNsPerFrame, nowMs][])
// -> the way each burst was written (0 plain, 1 io_uring): the chooser fed bursts whose cost
// depends on the way it picked, as a TAP port feeds it.
Napi::Value WriteChooserRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  WriteChooser c(info[0].As<Napi::Number>().Int32Value());
  Napi::Array bursts = info[1].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env, bursts.Length());
  for (uint32_t i = 0; i < bursts.Length(); i++) {
    Napi::Array b = bursts.Get(i).As<Napi::Array>();
    const uint32_t frames = b.Get(0u).As<Napi::Number>().Uint32Value();
    const uint32_t way = c.Current();
    const double perFrame =
        b.Get(way == WriteChooser::kPlain ? 1u : 2u).As<Napi::Number>().DoubleValue();
    const uint64_t now = static_cast<uint64_t>(b.Get(3u).As<Napi::Number>().DoubleValue() * 1e6);
    c.Burst(frames, static_cast<uint64_t>(perFrame * frames), now);
    out.Set(i, Napi::Number::New(env, way));
  }
  return out;
}

void InitTestSurface(Napi::Env env, Napi::Object exports) {
  exports.Set("writeChooserRun", Napi::Function::New<WriteChooserRun>(env));
  exports.Set("coalesceRun", Napi::Function::New<CoalesceRun>(env));
  exports.Set("netRules", NetRules(env));
  exports.Set("RingModel", RingModel::Init(env));
  exports.Set("rssHash", Napi::Function::New<RssHash>(env));
  exports.Set("toeplitz", Napi::Function::New<ToeplitzJs>(env));
}

}  // namespace vun
