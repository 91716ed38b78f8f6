// The fault room (pair_faults.h): taking an event's lies (faults.h), applying them where the
// device acts (the frame, the used element, the interrupt), holding frames (delay, rate,
// reorder) and recording each lie in the fault log.
#include "pair_faults.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "host_port.h"
#include "net_rules.h"

namespace vun {
namespace {

// HEADER_FIELDS: byte offset and size of flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset, num_buffers (virtio 1.2 §5.1.6).
constexpr uint8_t kHeaderAt[7] = {0, 1, 2, 4, 6, 8, 10};
constexpr uint8_t kHeaderSize[7] = {1, 1, 2, 2, 2, 2, 2};

uint64_t ReadLe(const uint8_t* p, uint8_t size) {
  return size == 1 ? p[0] : uint64_t(p[0]) | (uint64_t(p[1]) << 8);
}
void WriteLe(uint8_t* p, uint8_t size, uint64_t v) {
  p[0] = static_cast<uint8_t>(v);
  if (size == 2) p[1] = static_cast<uint8_t>(v >> 8);
}

// delay: value ns, plus jitter drawn from the rule's stream: uniform in [-j, +j), or normal
// (Irwin-Hall: the sum of 12 uniforms less 6, standard deviation 1). Only adds and multiplies
// of doubles, then floor: src/faults/lies.ts computes the same nanoseconds.
int64_t DelayNs(const VringFaults& f, const FaultRule& r, uint64_t e) {
  double d = static_cast<double>(r.value);
  if (r.jitterNs) {
    const uint64_t base = Draw(f.seed, r.rule, f.vring, e);
    auto unit = [](uint64_t x) {
      return static_cast<double>(x >> 11) * (1.0 / 9007199254740992.0);
    };
    double z;
    if (r.mode == 1) {
      z = -6.0;
      for (uint64_t i = 0; i < 12; i++) z += unit(Mix64(base ^ (i + 1)));
    } else {
      z = 2.0 * unit(Mix64(base)) - 1.0;
    }
    d += z * static_cast<double>(r.jitterNs);
  }
  return d <= 0 ? 0 : static_cast<int64_t>(std::floor(d));
}

// One rule that fired, into the event's lies.
void Tell(const VringFaults& f, const FaultRule& r, uint64_t e, Lies* l) {
  const int32_t rule = r.rule;
  switch (r.action) {
    case kFaultDrop:
      l->drop = rule;
      break;
    case kFaultLossGilbert:
      l->drop = rule;
      l->dropAction = kFaultLossGilbert;
      break;
    case kFaultDelay:
      l->delay = rule;
      l->delayNs = DelayNs(f, r, e);
      break;
    case kFaultRate:
      l->rate = rule;
      l->rateRule = const_cast<FaultRule*>(&r);
      break;
    case kFaultReorder:
      l->reorder = rule;
      l->gap = static_cast<int32_t>(r.value);
      break;
    case kFaultUsedBurst:
      l->usedBurst = rule;
      l->burstN = static_cast<uint32_t>(r.value);
      l->burstHoldNs = r.holdNs;
      break;
    case kFaultNotifyStorm:
      l->storm = rule;
      l->stormN = static_cast<uint32_t>(r.value);
      l->stormPaceNs = r.paceNs;
      break;
    case kFaultNotifyDelay:
      l->notifyDelay = rule;
      l->notifyDelayNs = static_cast<int64_t>(r.value);
      break;
    case kFaultDuplicate:
      l->duplicate = rule;
      break;
    case kFaultCorrupt:
      l->corrupt = rule;
      // Which bit of the last byte: the next draw of the same stream.
      l->corruptBit = static_cast<uint8_t>(Mix64(Draw(f.seed, r.rule, f.vring, e)) & 7);
      break;
    case kFaultWithhold:
      l->withhold = rule;
      break;
    case kFaultRunt:
      l->runt = rule;
      break;
    case kFaultUsedLen:
      l->usedLen = rule;
      l->lenMode = r.mode;
      l->lenValue = r.value;
      break;
    case kFaultUsedId:
      l->usedId = rule;
      l->idMode = r.mode;
      l->idValue = r.value;
      break;
    case kFaultUsedWrap:
      l->usedWrap = rule;
      break;
    case kFaultDescRewrite:
      l->descRewrite = rule;
      l->descField = r.field;
      l->descValue = r.value;
      break;
    case kFaultHeader:
      if (r.field < 7) {
        l->header[r.field] = rule;
        l->headerValue[r.field] = r.value;
      }
      break;
    default:
      break;
  }
}

}  // namespace

PairFaults::PairFaults(DeviceConfig& cfg, uint32_t pair)
    : cfg_(cfg), pair_(pair), copy_(kMaxFrameBytes), lieBuf_(kMaxFrameBytes) {}

void PairFaults::Attach() {
  for (int d = 0; d < 2; d++) {
    rules_[d] = cfg_.FaultsOf(VringOf(d));
    log_[d] = cfg_.FaultLogOf(VringOf(d));
  }
  lies_[kToGuest].pending = false;
}

bool PairFaults::Idle() const {
  for (int d = 0; d < 2; d++)
    if (Busy(d) || heldUsed_[d] || stormN_[d] || notifyAtNs_[d] != FrameHold::kNever) return false;
  return true;
}

void PairFaults::Record(int d, int32_t rule, uint8_t action, uint8_t field, uint32_t ringIdx,
                        uint64_t event, uint64_t oldValue, uint64_t newValue) {
  if (log_[d])
    log_[d]->Fault(static_cast<uint16_t>(rule), action, field, ringIdx, event, oldValue, newValue);
}

void PairFaults::Take(int d, Lies* l) {
  *l = Lies{};
  l->pending = true;
  const VringFaults& f = *rules_[d];
  rules_[d]->Next([&](const FaultRule& r, uint64_t e) {
    l->event = e;
    Tell(f, r, e, l);
  });
  // A drop is told when it is decided; the frame-changing lies of a dropped frame are never
  // applied (a transmitq chain's used-element lies still are: they are about its completion).
  if (l->drop >= 0) Record(d, l->drop, l->dropAction, kFieldNone, kNoRing, l->event, 0, 0);
}

Lies* PairFaults::TakeChain(uint16_t head) {
  Lies* l = &lies_[kFromGuest];
  Take(kFromGuest, l);
  TakeNotifyLies(kFromGuest, *l, head);
  return l;
}

PairFaults::Frame PairFaults::Arriving(Lies** lies, const uint8_t* frame, uint32_t len,
                                       bool again) {
  Frame out;
  out.data = frame;
  out.len = len;
  *lies = nullptr;
  if (again) return out;
  if (rules_[kToGuest]) {
    // Each frame for the guest is an event, decided once: a frame that waits for buffers keeps
    // its lies.
    Lies* l = &lies_[kToGuest];
    if (!l->pending) Take(kToGuest, l);
    if (l->drop >= 0) {
      l->pending = false;
      out.go = false;
      return out;
    }
    if (l->ChangesFrame()) {
      out.len = LieFrame(*l, frame, len);
      out.data = lieBuf_.data();
    }
    if (l->Holds()) {
      // delay, rate, reorder: the frame (as changed) waits; its used-element lies are not told.
      Hold(kToGuest, *l, out.data, out.len, kNoRing);
      l->pending = false;
      out.go = false;
      return out;
    }
    out.copies = l->duplicate >= 0 ? 2 : 1;
    *lies = l;
  }
  if (hold_[kToGuest].size()) hold_[kToGuest].Passed();
  return out;
}

PairFaults::Frame PairFaults::Leave(Lies* l, const Element& e) {
  Frame out;
  if (l && l->drop >= 0) {
    out.go = false;  // recorded when taken
    return out;
  }
  if (l && (l->Holds() || l->corrupt >= 0)) {
    uint32_t len = CopyChainOut(e, copy_.data(), static_cast<uint32_t>(copy_.size()));
    if (len == UINT32_MAX) {
      cfg_.Count(VringOf(kFromGuest), kCDropTooBig, 1);
      RecordFrameLies(kFromGuest, *l);
      out.go = false;
      return out;
    }
    const uint8_t* f = copy_.data();
    // Only corrupt changes a frame that leaves at once; a held one takes every frame lie.
    if (!l->Holds() || l->ChangesFrame()) {
      len = LieFrame(*l, f, len);
      f = lieBuf_.data();
    }
    if (l->Holds()) {
      // delay, rate, reorder: a copy leaves later; the chain is completed now, as a NIC
      // completes a frame once it is in its own queue.
      Hold(kFromGuest, *l, f, len, e.head);
      out.go = false;
      return out;
    }
    out.data = f;
    out.len = len;
  }
  if (hold_[kFromGuest].size()) hold_[kFromGuest].Passed();
  if (l && l->duplicate >= 0) out.copies = 2;
  return out;
}

void PairFaults::Left(const Lies& l, uint16_t head, uint32_t sent) {
  if (sent == 2) Record(kFromGuest, l.duplicate, kFaultDuplicate, kFieldNone, head, l.event, 0, 0);
  RecordFrameLies(kFromGuest, l);
}

void PairFaults::Duplicated(const Lies& l) {
  Record(kToGuest, l.duplicate, kFaultDuplicate, kFieldNone, kNoRing, l.event, 0, 0);
}

uint32_t PairFaults::LieFrame(Lies& l, const uint8_t* frame, uint32_t len) {
  const uint32_t hdr = cfg_.hdrLen;
  uint32_t n = len <= lieBuf_.size() ? len : static_cast<uint32_t>(lieBuf_.size());
  std::memcpy(lieBuf_.data(), frame, n);
  uint8_t* f = lieBuf_.data();
  for (int k = 0; k < 6; k++) {
    if (l.header[k] < 0 || kHeaderAt[k] + kHeaderSize[k] > hdr) continue;
    l.headerOld[k] = ReadLe(f + kHeaderAt[k], kHeaderSize[k]);
    WriteLe(f + kHeaderAt[k], kHeaderSize[k], l.headerValue[k]);
  }
  if (l.corrupt >= 0 && n > hdr) {
    l.byteOld = f[n - 1];
    f[n - 1] = static_cast<uint8_t>(l.byteOld ^ (1u << l.corruptBit));
    l.byteNew = f[n - 1];
  }
  l.runtFrom = l.runtTo = n;
  if (l.runt >= 0 && n > hdr + 6) n = l.runtTo = hdr + 6;  // short of an Ethernet header (14)
  return n;
}

void PairFaults::RecordFrameLies(int d, const Lies& l) {
  for (int k = 0; k < 6; k++) {
    if (l.header[k] >= 0 && kHeaderAt[k] + kHeaderSize[k] <= cfg_.hdrLen)
      Record(d, l.header[k], kFaultHeader, static_cast<uint8_t>(k), kNoRing, l.event,
             l.headerOld[k], l.headerValue[k]);
  }
  if (l.corrupt >= 0)
    Record(d, l.corrupt, kFaultCorrupt, kFieldByte, kNoRing, l.event, l.byteOld, l.byteNew);
  if (l.runt >= 0) Record(d, l.runt, kFaultRunt, kFieldLen, kNoRing, l.event, l.runtFrom, l.runtTo);
}

// The used element told for chain `head` that had `len` bytes written: truth or lie. A
// desc-rewrite lands here too: the head descriptor changes in guest memory before the chain is
// completed.
static void LieUsed(const Lies& l, Vring& ring, uint16_t num, uint16_t head, uint32_t len,
                    uint32_t* id, uint32_t* outLen, uint64_t* descOld) {
  if (l.descRewrite >= 0) {
    const uint8_t field = l.descField == kFieldAddr ? 0 : l.descField == kFieldLen ? 1 : 2;
    *descOld = ring.RewriteDesc(head, field, l.descValue);
  }
  *id = head;
  if (l.usedId >= 0) {
    switch (l.idMode) {
      case kIdOutOfRange:
        *id = num;  // the first id the driver's table does not have
        break;
      case kIdNotAHead:
        *id = ring.NextOf(head);  // the chain's second descriptor (head+1 without one)
        break;
      case kIdRepeat:
        *id = head;  // the true id, told twice: the caller writes a second used element
        break;
      default:
        *id = static_cast<uint32_t>(l.idValue);
    }
  }
  *outLen = len;
  if (l.usedLen >= 0) {
    uint64_t v = len;
    if (l.lenMode == kLenPlus) v = len + l.lenValue;
    if (l.lenMode == kLenMinus) v = l.lenValue > len ? 0 : len - l.lenValue;
    if (l.lenMode == kLenSet) v = l.lenValue;
    *outLen = v > 0xffffffffull ? 0xffffffffu : static_cast<uint32_t>(v);
  }
}

PairFaults::UsedLie PairFaults::Used(int d, const Lies& l, Vring& ring, uint16_t head,
                                     uint32_t len) {
  UsedLie u;
  if (l.withhold >= 0) {
    // Never completed: the chain stays in flight for the guest (the device knows it is done).
    Record(d, l.withhold, kFaultWithhold, kFieldId, head, l.event, head, 0);
    u.count = 0;
    return u;
  }
  u = Told(d, l, ring, head, len);
  u.count = l.Twice() ? 2 : 1;
  return u;
}

PairFaults::UsedLie PairFaults::Told(int d, const Lies& l, Vring& ring, uint16_t head,
                                     uint32_t len) {
  UsedLie u;
  uint64_t descOld = 0;
  LieUsed(l, ring, cfg_.queues[VringOf(d)].cfg.num, head, len, &u.id, &u.len, &descOld);
  if (l.descRewrite >= 0)
    Record(d, l.descRewrite, kFaultDescRewrite, l.descField, head, l.event, descOld, l.descValue);
  if (l.usedId >= 0) Record(d, l.usedId, kFaultUsedId, kFieldId, head, l.event, head, u.id);
  if (l.usedLen >= 0) Record(d, l.usedLen, kFaultUsedLen, kFieldLen, head, l.event, len, u.len);
  // used-wrap: a packed ring's used descriptor only (a split ring has no flags to lie with).
  u.wrongWrap = l.usedWrap >= 0 && ring.Packed();
  if (u.wrongWrap) Record(d, l.usedWrap, kFaultUsedWrap, kFieldNone, head, l.event, 0, 0);
  return u;
}

PairFaults::PlacedLie PairFaults::Placed(Lies& l, Vring& ring, uint16_t head, uint32_t taken,
                                         uint32_t firstLen) {
  PlacedLie p;
  TakeNotifyLies(kToGuest, l, head);
  RecordFrameLies(kToGuest, l);
  if (l.header[6] >= 0 && NumBuffersOffset(cfg_.hdrLen) >= 0) {
    // num_buffers (6): told after the device wrote the true count.
    Record(kToGuest, l.header[6], kFaultHeader, 6, kNoRing, l.event, taken, l.headerValue[6]);
    p.numBuffers = static_cast<int32_t>(l.headerValue[6] & 0xffff);
  }
  p.id = head;
  if (l.AboutUsed()) {
    // The first chain's used element, written again with the lie.
    const UsedLie u = Told(kToGuest, l, ring, head, firstLen);
    p.rewrite = true;
    p.id = u.id;
    p.len = u.len;
    p.wrongWrap = u.wrongWrap;
  }
  p.twice = l.Twice();  // used-id "repeat": a second used element for the same head
  l.pending = false;
  return p;
}

void PairFaults::TakeNotifyLies(int d, const Lies& l, uint32_t head) {
  if (l.usedBurst >= 0) {
    // The batch can never be larger than the ring.
    const uint32_t num = cfg_.queues[VringOf(d)].cfg.num;
    burstN_[d] = l.burstN < num ? l.burstN : num;
    burstHoldNs_[d] = l.burstHoldNs;
    Record(d, l.usedBurst, kFaultUsedBurst, kFieldNone, head, l.event, 0, 0);
  }
  if (l.storm >= 0) {
    stormN_[d] += l.stormN;
    stormPaceNs_[d] = l.stormPaceNs;
    Record(d, l.storm, kFaultNotifyStorm, kFieldNone, kNoRing, l.event, 0, 0);
  }
  if (l.notifyDelay >= 0) {
    if (l.notifyDelayNs > notifyDelayNs_[d]) notifyDelayNs_[d] = l.notifyDelayNs;
    Record(d, l.notifyDelay, kFaultNotifyDelay, kFieldDelayUs, kNoRing, l.event, 0,
           static_cast<uint64_t>(l.notifyDelayNs / 1000));
  }
}

bool PairFaults::Interrupt(int d, Vring& ring) {
  const uint16_t signalled = ring.SignalledUsed();
  const bool signalledValid = ring.SignalledUsedValid();
  bool send = ring.NeedNotify();
  FaultRule* r = send && rules_[d] ? rules_[d]->NotifyDropped() : nullptr;
  if (r) {
    // notify-drop: the interrupt is owed, not sent (not an event). The ring forgets it was
    // decided, so the first decision after the window (EVENT_IDX compares used_event with the
    // last one sent) interrupts the driver for everything that piled up.
    r->fired++;
    Record(d, r->rule, kFaultNotifyDrop, kFieldNone, kNoRing, rules_[d]->events, 0, 0);
    ring.SetSignalled(signalled, signalledValid);
    send = false;
  }
  if (send && notifyDelayNs_[d] > 0) {
    // notify-delay: the interrupt goes out later (ReleaseDue); one pending at a time.
    const int64_t at = MonotonicNs() + notifyDelayNs_[d];
    if (at < notifyAtNs_[d]) notifyAtNs_[d] = at;
    send = false;
  }
  notifyDelayNs_[d] = 0;
  return send;
}

bool PairFaults::Publish(int d, uint16_t filled) {
  if (filled < burstN_[d]) {
    heldUsed_[d] = filled;  // used-burst: publish when the batch is full
    // holdMs: or once the first of them has waited that long (ReleaseDue).
    if (burstHoldNs_[d] && burstDueNs_[d] == FrameHold::kNever)
      burstDueNs_[d] = MonotonicNs() + burstHoldNs_[d];
    return false;
  }
  heldUsed_[d] = 0;
  burstN_[d] = 0;
  burstDueNs_[d] = FrameHold::kNever;
  return true;
}

uint16_t PairFaults::Stop(int d) {
  burstN_[d] = 0;
  burstDueNs_[d] = FrameHold::kNever;
  const uint16_t n = heldUsed_[d];
  heldUsed_[d] = 0;
  return n;
}

int64_t PairFaults::NextNs() const {
  return std::min({hold_[0].NextNs(), hold_[1].NextNs(), notifyAtNs_[0], notifyAtNs_[1],
                   burstDueNs_[0], burstDueNs_[1], stormAtNs_[0], stormAtNs_[1]});
}

void PairFaults::Hold(int d, Lies& l, const uint8_t* frame, uint32_t len, uint32_t ringIdx) {
  HoldOne(d, l, frame, len);
  if (l.duplicate >= 0) {
    HoldOne(d, l, frame, len);
    Record(d, l.duplicate, kFaultDuplicate, kFieldNone, ringIdx, l.event, 0, 0);
  }
  if (l.delay >= 0)
    Record(d, l.delay, kFaultDelay, kFieldDelayUs, kNoRing, l.event, 0,
           static_cast<uint64_t>(l.delayNs / 1000));
  if (l.rate >= 0) Record(d, l.rate, kFaultRate, kFieldNone, kNoRing, l.event, 0, 0);
  if (l.reorder >= 0) Record(d, l.reorder, kFaultReorder, kFieldNone, kNoRing, l.event, 0, 0);
  RecordFrameLies(d, l);
}

void PairFaults::HoldOne(int d, const Lies& l, const uint8_t* frame, uint32_t len) {
  const int64_t now = MonotonicNs();
  int64_t at = now + l.delayNs;
  if (l.rateRule && l.rateRule->value) {
    // rate: the emulated link sends one frame at a time, value bit/s; the frame leaves once
    // its last bit is out (the virtio-net header is not on the wire).
    FaultRule& r = *l.rateRule;
    const uint64_t bits = 8ull * (len > cfg_.hdrLen ? len - cfg_.hdrLen : 0);
    const int64_t start = at > r.linkFreeNs ? at : r.linkFreeNs;
    r.linkFreeNs = start + static_cast<int64_t>(bits * 1000000000ull / r.value);
    at = r.linkFreeNs;
  }
  // reorder: waits for `gap` later frames (or 1 s, so a last frame is not kept forever).
  const int32_t gap = l.reorder >= 0 ? l.gap : -1;
  if (l.reorder >= 0) at = now + 1000000000ll;
  if (!hold_[d].Push(at, gap, frame, len))
    cfg_.Count(VringOf(d), kCDropNoBuffers, 1);  // full (netem's limit)
}

}  // namespace vun
