// The fault plan in the queue pair: taking an event's lies (faults.h), applying them where the
// device acts (the frame, the used element, the interrupt) and recording each one in the fault
// log. A fault is a lie told to the guest: the device's own state (which chains are in flight,
// the ring positions) stays the truth.
#include <cmath>
#include <cstring>

#include "queue_pair.h"

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

}  // namespace

// delay: value ns, plus jitter drawn from the rule's stream: uniform in [-j, +j), or normal
// (Irwin-Hall: the sum of 12 uniforms less 6, standard deviation 1). Only adds and multiplies
// of doubles, then floor: src/faults/lies.ts computes the same nanoseconds.
static int64_t DelayNs(const VringFaults& f, const FaultRule& r, uint64_t e) {
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

void QueuePair::Record(uint32_t vring, int32_t rule, uint8_t action, uint8_t field,
                       uint32_t ringIdx, uint64_t event, uint64_t oldValue, uint64_t newValue) {
  VringObserver* log = vring == receiveq_ ? faultLogToGuest_ : faultLogFromGuest_;
  if (log)
    log->Fault(static_cast<uint16_t>(rule), action, field, ringIdx, event, oldValue, newValue);
}

void QueuePair::TakeLies(VringFaults& f, uint32_t vring, Lies* l) {
  *l = Lies{};
  l->pending = true;
  f.Next([&](const FaultRule& r, uint64_t e) {
    l->event = e;
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
        break;
      case kFaultNotifyStorm:
        l->storm = rule;
        l->stormN = static_cast<uint32_t>(r.value);
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
        l->corruptBit = static_cast<uint8_t>(Mix64(Draw(f.seed, r.rule, vring, e)) & 7);
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
  });
  // A drop is told when it is decided; the frame-changing lies of a dropped frame are never
  // applied (a transmitq chain's used-element lies still are: they are about its completion).
  if (l->drop >= 0) {
    Record(vring, l->drop, l->dropAction, kFieldNone, kNoRing, l->event, 0, 0);
  }
}

uint32_t QueuePair::LieFrame(Lies& l, const uint8_t* frame, uint32_t len) {
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

void QueuePair::RecordFrameLies(uint32_t vring, const Lies& l) {
  for (int k = 0; k < 6; k++) {
    if (l.header[k] >= 0 && kHeaderAt[k] + kHeaderSize[k] <= cfg_.hdrLen)
      Record(vring, l.header[k], kFaultHeader, static_cast<uint8_t>(k), kNoRing, l.event,
             l.headerOld[k], l.headerValue[k]);
  }
  if (l.corrupt >= 0)
    Record(vring, l.corrupt, kFaultCorrupt, kFieldByte, kNoRing, l.event, l.byteOld, l.byteNew);
  if (l.runt >= 0)
    Record(vring, l.runt, kFaultRunt, kFieldLen, kNoRing, l.event, l.runtFrom, l.runtTo);
}

// A transmitq chain to the host: as it is, or (corrupt) a changed copy of it.
HostPort::Sent QueuePair::SendFromGuest(const Element& e, Lies* l, uint32_t* looped) {
  const uint32_t hdr = cfg_.hdrLen;
  if (!l || l->corrupt < 0)
    return port_->Send(e, hdr, fromGuestBounce_.data(), fromGuestBounce_.size(), looped);
  uint32_t len = CopyChainOut(e, fromGuestBounce_.data(), fromGuestBounce_.size());
  if (len == UINT32_MAX) return HostPort::Sent::kTooBig;
  len = LieFrame(*l, fromGuestBounce_.data(), len);
  return port_->SendFrame(lieBuf_.data(), len, fromGuestBounce_.data(), fromGuestBounce_.size(),
                          looped);
}

void QueuePair::LieUsed(uint32_t vring, const Lies& l, uint16_t head, uint32_t len, uint32_t* id,
                        uint32_t* outLen) {
  uint32_t reportId = head;
  uint32_t reportLen = len;
  Vring& ring = vring == receiveq_ ? toGuest_ : fromGuest_;
  if (l.descRewrite >= 0) {
    // desc-rewrite: the head descriptor changes in guest memory before the chain is completed.
    const uint8_t field = l.descField == kFieldAddr ? 0 : l.descField == kFieldLen ? 1 : 2;
    const uint64_t old = ring.RewriteDesc(head, field, l.descValue);
    Record(vring, l.descRewrite, kFaultDescRewrite, l.descField, head, l.event, old, l.descValue);
  }
  if (l.usedId >= 0) {
    const uint16_t num = cfg_.queues[vring].cfg.num;
    switch (l.idMode) {
      case kIdOutOfRange:
        reportId = num;  // the first id the driver's table does not have
        break;
      case kIdNotAHead:
        reportId = ring.NextOf(head);  // the chain's second descriptor (head+1 without one)
        break;
      case kIdRepeat:
        reportId = head;  // the true id, told twice: the caller writes a second used element
        break;
      default:
        reportId = static_cast<uint32_t>(l.idValue);
    }
    Record(vring, l.usedId, kFaultUsedId, kFieldId, head, l.event, head, reportId);
  }
  if (l.usedLen >= 0) {
    uint64_t v = len;
    if (l.lenMode == kLenPlus) v = len + l.lenValue;
    if (l.lenMode == kLenMinus) v = l.lenValue > len ? 0 : len - l.lenValue;
    if (l.lenMode == kLenSet) v = l.lenValue;
    reportLen = v > 0xffffffffull ? 0xffffffffu : static_cast<uint32_t>(v);
    Record(vring, l.usedLen, kFaultUsedLen, kFieldLen, head, l.event, len, reportLen);
  }
  *id = reportId;
  *outLen = reportLen;
}

void QueuePair::TakeNotifyLies(uint32_t vring, const Lies& l, uint32_t head) {
  const int d = vring == receiveq_ ? 0 : 1;
  if (l.usedBurst >= 0) {
    // The batch can never be larger than the ring.
    const uint32_t num = cfg_.queues[vring].cfg.num;
    burstN_[d] = l.burstN < num ? l.burstN : num;
    Record(vring, l.usedBurst, kFaultUsedBurst, kFieldNone, head, l.event, 0, 0);
  }
  if (l.storm >= 0) {
    stormN_[d] += l.stormN;
    Record(vring, l.storm, kFaultNotifyStorm, kFieldNone, kNoRing, l.event, 0, 0);
  }
  if (l.notifyDelay >= 0) {
    if (l.notifyDelayNs > notifyDelayNs_[d]) notifyDelayNs_[d] = l.notifyDelayNs;
    Record(vring, l.notifyDelay, kFaultNotifyDelay, kFieldDelayUs, kNoRing, l.event, 0,
           static_cast<uint64_t>(l.notifyDelayNs / 1000));
  }
}

// notify-drop: an interrupt the ring decided to send is held back while a rule's window is open.
bool QueuePair::NotifyHeldBack(uint32_t vring) {
  VringFaults* f = vring == receiveq_ ? faultsToGuest_ : faultsFromGuest_;
  if (!f) return false;
  FaultRule* r = f->NotifyDropped();
  if (!r) return false;
  r->fired++;
  Record(vring, r->rule, kFaultNotifyDrop, kFieldNone, kNoRing, f->events, 0, 0);
  return true;
}

}  // namespace vun
