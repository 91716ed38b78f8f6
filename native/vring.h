// One vring as the queue pair drives it: a split ring (split_ring.h) or a packed ring
// (packed_ring.h), chosen when it is attached (VIRTIO_F_RING_PACKED). Both have the same batch
// API; this class forwards each call to the one in use, a predictable branch per call (per
// burst or per chain, never per byte). src/virtio/vring.ts is the TS side.
#pragma once

#include <cstdint>

#include "packed_ring.h"
#include "split_ring.h"

namespace vun {

class Vring {
 public:
  bool Attach(const GuestMemory& mem, const RingConfig& c, uint16_t lastAvail, uint16_t used) {
    packed_ = c.packed;
    return packed_ ? p_.Attach(mem, c, lastAvail, used) : s_.Attach(mem, c, lastAvail, used);
  }
  bool Packed() const { return packed_; }

  uint32_t PopBurst(Element* elems, uint32_t max, Segment* segs) {
    return packed_ ? p_.PopBurst(elems, max, segs) : s_.PopBurst(elems, max, segs);
  }
  void Rewind(uint16_t count) { packed_ ? p_.Rewind(count) : s_.Rewind(count); }
  // Used element `idx` of the batch: buffer `id` (split: head), `len` bytes written; a packed
  // ring skips the chain's `slots` descriptors after it.
  void Fill(uint32_t id, uint32_t len, uint16_t idx, uint16_t slots) {
    packed_ ? p_.Fill(id, len, idx, slots) : s_.Fill(id, len, idx);
  }
  void Flush(uint16_t count) { packed_ ? p_.Flush(count) : s_.Flush(count); }
  // used-wrap: a packed ring flags element `idx` for the other wrap counter (split: no flags).
  void FlipWrap(uint16_t idx) {
    if (packed_) p_.FlipWrap(idx);
  }
  bool NeedNotify() { return packed_ ? p_.NeedNotify() : s_.NeedNotify(); }
  void SetNotification(bool enable) {
    packed_ ? p_.SetNotification(enable) : s_.SetNotification(enable);
  }
  bool Empty() { return packed_ ? p_.Empty() : s_.Empty(); }
  void Break(uint32_t err) { packed_ ? p_.Break(err) : s_.Break(err); }

  // Positions: split, free-running indexes; packed, position | wrap counter << 15.
  uint16_t LastAvailIdx() const { return packed_ ? p_.LastAvailIdx() : s_.lastAvailIdx; }
  uint16_t ShadowAvailIdx() const { return packed_ ? p_.LastAvailIdx() : s_.shadowAvailIdx; }
  uint16_t UsedIdx() const { return packed_ ? p_.UsedIdx() : s_.usedIdx; }
  bool Broken() const { return packed_ ? p_.broken : s_.broken; }
  uint32_t Error() const { return packed_ ? p_.error : s_.error; }
  uint16_t SignalledUsed() const { return packed_ ? p_.signalledUsed : s_.signalledUsed; }
  bool SignalledUsedValid() const {
    return packed_ ? p_.signalledUsedValid : s_.signalledUsedValid;
  }
  // notify-drop: the ring forgets a decision (the interrupt is owed, not sent).
  void SetSignalled(uint16_t used, bool valid) {
    (packed_ ? p_.signalledUsed : s_.signalledUsed) = used;
    (packed_ ? p_.signalledUsedValid : s_.signalledUsedValid) = valid;
  }

  DirtyLog& Log() { return packed_ ? p_.log : s_.log; }
  void SetLogArea(const LogArea& a) { p_.log.area = s_.log.area = a; }
  void SetTrace(VringObserver* t) { p_.trace = s_.trace = t; }
  VringObserver* Trace() const { return s_.trace; }

  // The fault plan's view of the descriptors (used-id "not-a-head", desc-rewrite).
  uint16_t NextOf(uint16_t head) const { return packed_ ? p_.NextOf(head) : s_.NextOf(head); }
  // field: 0 addr, 1 len, 2 flags.
  uint64_t RewriteDesc(uint16_t head, uint8_t field, uint64_t v) {
    if (packed_) return p_.RewriteDesc(head, field, v);
    return s_.RewriteDesc(head, static_cast<SplitRing::DescField>(field), v);
  }

 private:
  bool packed_ = false;
  SplitRing s_;
  PackedRing p_;
};

}  // namespace vun
