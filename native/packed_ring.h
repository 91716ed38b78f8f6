// The packed virtqueue, device side (virtio 1.2 §2.8), as the C++ fast path runs it. The TS
// reference model (src/virtio/packed-ring.ts) implements the same steps with the same names and
// the same writes to guest memory; differential tests hold them together, known-answer tests
// hold both to the spec.
//
// One descriptor ring carries both directions: the driver writes available descriptors in ring
// order, the device writes used descriptors back over them. Each side keeps a wrap counter
// (starting at 1) that flips at the ring's end (§2.8.1). Positions are kept as vhost-user
// encodes them (SET_VRING_BASE): bits 0-14 the position, bit 15 the wrap counter.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "chain_rules.h"
#include "dirty_log.h"
#include "guest_memory.h"
#include "observe.h"
#include "ring_errors.h"
#include "ring_types.h"

namespace vun {

// §2.8.1: availability and use bits of a descriptor's flags.
constexpr uint16_t kDescFAvail = 1 << 7;
constexpr uint16_t kDescFUsed = 1 << 15;
// §2.8.10: event suppression flags; DESC only with VIRTIO_F_EVENT_IDX.
constexpr uint16_t kEventFEnable = 0;
constexpr uint16_t kEventFDisable = 1;
constexpr uint16_t kEventFDesc = 2;
constexpr uint16_t kWrapBit = 1 << 15;

struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16, "pvirtq_desc is 16 bytes");

class PackedRing {
 public:
  RingConfig cfg;
  uint16_t availPos = 0, usedPos = 0;
  bool availWrap = true, usedWrap = true;
  uint16_t signalledUsed = 0;  // encoded
  bool signalledUsedValid = false;
  bool broken = false;
  uint32_t error = kRingOk;
  bool kicksWanted = true;  // SetNotification's last word; a started ring waits for a kick
  VringObserver* trace = nullptr;
  DirtyLog log;

  uint16_t LastAvailIdx() const { return availPos | (availWrap ? kWrapBit : 0); }
  uint16_t UsedIdx() const { return usedPos | (usedWrap ? kWrapBit : 0); }

  // Resolves the ring areas; false (and broken, kRingAddrInvalid) when one is not mapped in one
  // region, misaligned (§2.8.10.1: descriptor ring 16, event areas 4), or a position is past
  // the ring.
  bool Attach(const GuestMemory& mem, const RingConfig& c, uint16_t lastAvail, uint16_t used) {
    cfg = c;
    availPos = lastAvail & 0x7fff;
    availWrap = lastAvail & kWrapBit;
    usedPos = used & 0x7fff;
    usedWrap = used & kWrapBit;
    signalledUsedValid = false;
    broken = false;
    error = kRingOk;
    kicksWanted = true;
    fillN_ = 0;
    fillEnd_ = 0;
    batchAny_ = false;
    startsN_ = 0;
    const uint32_t n = c.num;
    desc_ = mem.VaToHost(c.descVa, 16 * uint64_t(n));
    driverEvent_ = mem.VaToHost(c.availVa, 4);
    deviceEvent_ = mem.VaToHost(c.usedVa, 4);
    mem_ = &mem;
    starts_.assign(n ? n : 1, 0);
    slotOfId_.assign(n ? n : 1, 0);
    fillAt_.resize(n + 1u);
    fillId_.resize(n + 1u);
    fillLen_.resize(n + 1u);
    fillFlip_.assign(n + 1u, 0);
    flips_ = 0;
    if (n == 0 || n > 0x8000 || !desc_ || !driverEvent_ || !deviceEvent_ || (c.descVa & 15) ||
        (c.availVa & 3) || (c.usedVa & 3) || availPos >= n || usedPos >= n) {
      return Fail(kRingAddrInvalid);
    }
    return true;
  }

  // Pops up to `max` chains in ring order (§2.8.10.2 "The device MUST start processing driver
  // descriptors in the order in which they appear in the ring").
  uint32_t PopBurst(Element* elems, uint32_t max, Segment* segs) {
    if (broken) return 0;
    uint32_t n = 0, used = 0;
    while (n < max && kBurstSegs - used >= kMaxChainSegs) {
      // §2.8.12: the device uses a descriptor only once it is marked available. Acquire: the
      // descriptors the driver wrote before this flags store are visible to the reads below.
      if (!IsAvail(FlagsAcquire(availPos), availWrap)) break;
      Element& e = elems[n];
      uint32_t err = ReadChain(&e, segs + used);
      if (trace) {
        bool ok = err == kRingOk;
        trace->Chain(ok ? e.head : IdAt(availPos), err, ok ? e.outLen : 0, ok ? e.inLen : 0,
                     static_cast<uint16_t>(availPos));
      }
      if (err != kRingOk) {
        Fail(err);
        break;
      }
      used += e.outNum + e.inNum;
      starts_[startsN_++ % cfg.num] = LastAvailIdx();
      slotOfId_[e.head] = availPos;
      Advance(&availPos, &availWrap, e.slots);
      n++;
    }
    // With EVENT_IDX the device asks for a kick once the driver makes this position available;
    // only while it wants kicks (at work it leaves the offset behind, and the driver stops).
    if (cfg.eventIdx && kicksWanted && !broken) SetDeviceOffWrap(LastAvailIdx());
    return n;
  }

  // Gives back the last `count` popped chains (not yet filled): they are read again later.
  void Rewind(uint16_t count) {
    if (count == 0 || count > startsN_ || count > cfg.num) return;
    startsN_ -= count;
    const uint16_t at = starts_[startsN_ % cfg.num];
    availPos = at & 0x7fff;
    availWrap = at & kWrapBit;
  }

  // Takes the id and length of batch element `idx` (§2.8.6: one used descriptor for a whole
  // list, then the device skips the list's `slots`). They are written with the flags at Flush:
  // the driver polls these very descriptors, and writing each cache line once per burst, not
  // once at fill and again at flush, keeps it from bouncing between the two cores (DPDK keeps
  // a shadow used ring for the same reason). Filling an element again replaces it.
  void Fill(uint32_t id, uint32_t len, uint16_t idx, uint16_t slots) {
    if (idx > fillN_) return;
    if (idx == fillN_) {
      // Never more used descriptors than the ring holds (a used-id "repeat" lie could ask).
      if (fillN_ >= cfg.num || fillEnd_ + slots > cfg.num) return;
      fillAt_[fillN_++] = fillEnd_;
      fillEnd_ += slots;
    }
    const uint16_t id16 = static_cast<uint16_t>(id);
    if (cfg.inOrderBatch) {
      if (idx + 1u == fillN_) {
        batchId_ = id16;
        batchLen_ = len;
        batchAny_ = true;
      }
      return;
    }
    fillId_[idx] = id16;
    fillLen_[idx] = len;
    if (trace) trace->Used(static_cast<uint16_t>((usedPos + fillAt_[idx]) % cfg.num), id16, len);
  }

  // used-wrap (a fault plan's lie): element `idx` of the batch is written with AVAIL and USED
  // as the other wrap counter would set them, so the driver does not see it used (§2.8.1).
  void FlipWrap(uint16_t idx) {
    if (idx >= fillN_ || fillFlip_[idx]) return;
    fillFlip_[idx] = kDescFAvail | kDescFUsed;
    flips_++;
  }

  // Hands the filled descriptors to the driver by writing their flags: AVAIL and USED equal to
  // the device wrap counter at each position (§2.8.1), WRITE when data was written (§2.8.4).
  void Flush(uint16_t count) {
    // IN_ORDER batching publishes every buffer filled (their elements were not written one by one).
    const uint32_t n = cfg.inOrderBatch || count > fillN_ ? fillN_ : count;
    if (n == 0) {
      log.Sync();
      return;
    }
    // §2.8.9 IN_ORDER: one used descriptor for the whole batch, over its first descriptor, with
    // the last buffer's id; then the device skips the batch.
    const bool batch = cfg.inOrderBatch && batchAny_;
    if (batch) {
      uint8_t* d = desc_ + 16 * usedPos;
      std::memcpy(d + 8, &batchLen_, 4);
      std::memcpy(d + 12, &batchId_, 2);
      LogDesc(usedPos, 8, 4);
      if (trace) trace->Used(usedPos, batchId_, batchLen_);
    }
    batchAny_ = false;
    if (!batch) {
      for (uint32_t k = 0; k < n; k++) {
        const uint32_t pos = (usedPos + fillAt_[k]) % cfg.num;
        uint8_t* d = desc_ + 16 * pos;
        std::memcpy(d + 8, &fillLen_[k], 4);
        std::memcpy(d + 12, &fillId_[k], 2);
        LogDesc(pos, 8, 4);
      }
    }
    const uint32_t advance = n == fillN_ ? fillEnd_ : fillAt_[n];
    uint16_t newPos = usedPos;
    bool newWrap = usedWrap;
    Advance(&newPos, &newWrap, advance);
    const uint16_t newUsed = newPos | (newWrap ? kWrapBit : 0);
    // ring_journal.h: where the flush goes and what it writes, before the first flags store.
    if (cfg.journal) cfg.journal->Begin(newUsed, UsedIdx(), fillAt_.data(), batch ? 1 : n);
    // Release: the buffers' contents and the ids and lengths written above are visible before
    // any of the flags below that hand them over.
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (uint32_t k = batch ? 1 : n; k-- > 0;) {
      uint32_t pos = usedPos + fillAt_[k];
      bool wrap = usedWrap;
      if (pos >= cfg.num) {
        pos -= cfg.num;
        wrap = !wrap;
      }
      uint8_t* d = desc_ + 16 * pos;
      const uint32_t len = batch ? batchLen_ : fillLen_[k];
      uint16_t flags =
          (len ? kDescFWrite : 0) | (wrap ? static_cast<uint16_t>(kDescFAvail | kDescFUsed) : 0);
      // used-wrap (a fault plan's lie): AVAIL and USED as the other wrap counter would have them.
      if (flips_) flags ^= fillFlip_[k];
      // §2.8.11 "Multi-buffer requests": the first descriptor is marked used after the rest;
      // its store-release orders every flags store before it (the loop runs backwards).
      __atomic_store_n(reinterpret_cast<uint16_t*>(d + 14), flags,
                       k == 0 ? __ATOMIC_RELEASE : __ATOMIC_RELAXED);
      LogDesc(pos, 14, 2);
    }
    if (cfg.journal) cfg.journal->Commit(newUsed);
    usedPos = newPos;
    usedWrap = newWrap;
    for (uint32_t k = n; k < fillN_; k++) {
      fillAt_[k - n] = fillAt_[k] - advance;
      fillId_[k - n] = fillId_[k];
      fillLen_[k - n] = fillLen_[k];
    }
    if (flips_) {
      uint32_t left = 0;
      for (uint32_t k = 0; k < fillN_; k++) {
        const uint16_t f = k + n < fillN_ ? fillFlip_[k + n] : 0;
        fillFlip_[k] = f;
        left += f != 0;
      }
      flips_ = left;
    }
    fillN_ -= n;
    fillEnd_ -= advance;
    log.Sync();  // once per burst, after every write the burst made
    if (trace) trace->Flush(UsedIdx(), static_cast<uint16_t>(n));
  }

  // Whether the driver wants an interrupt for what was flushed, from the driver event
  // suppression structure (§2.8.10).
  bool NeedNotify() {
    // Full barrier: our flags stores are ordered before we read the driver's event structure
    // (store-load), or we could miss a driver that just asked for an interrupt.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (cfg.notifyOnEmpty && Empty()) {
      MarkSignalled();
      if (trace) trace->Notify(true, kWhyOnEmpty, cfg.eventIdx, 0, 0, 0, 0);
      return true;
    }
    const uint16_t flags =
        __atomic_load_n(reinterpret_cast<uint16_t*>(driverEvent_ + 2), __ATOMIC_RELAXED) & 3;
    if (!cfg.eventIdx) return ByFlags(flags);
    const uint16_t old = signalledUsed;
    const bool valid = signalledUsedValid;
    MarkSignalled();
    if (flags != kEventFDesc) return ByFlags(flags);
    const uint16_t offWrap =
        __atomic_load_n(reinterpret_cast<uint16_t*>(driverEvent_), __ATOMIC_RELAXED);
    if (!valid) {
      if (trace) trace->Notify(true, kWhyFirst, true, offWrap, UsedIdx(), 0, 0);
      return true;
    }
    // Event offset and both used positions on one line: a position from the previous lap (its
    // wrap counter differs from ours) counts N less (vhost_vring_call_packed in DPDK).
    const uint16_t newPos = usedPos;
    uint16_t oldPos = old & 0x7fff;
    if (newPos <= oldPos) oldPos = static_cast<uint16_t>(oldPos - cfg.num);
    uint16_t off = offWrap & 0x7fff;
    if (bool(offWrap & kWrapBit) != usedWrap) off = static_cast<uint16_t>(off - cfg.num);
    const bool sent =
        static_cast<uint16_t>(newPos - off - 1) < static_cast<uint16_t>(newPos - oldPos);
    if (trace) trace->Notify(sent, kWhyPackedDesc, true, offWrap, UsedIdx(), old, 0);
    return sent;
  }

  // Enables or suppresses the driver's kicks (device event suppression structure).
  void SetNotification(bool enable) {
    kicksWanted = enable;
    if (cfg.eventIdx) {
      if (!enable) return;
      const uint16_t at = LastAvailIdx();
      SetDeviceOffWrap(at);
      // Release: the offset is visible before the flags that make the driver read it.
      __atomic_store_n(reinterpret_cast<uint16_t*>(deviceEvent_ + 2), kEventFDesc,
                       __ATOMIC_RELEASE);
      LogDevice(2, 2);
      if (trace) trace->Kicks(true, kKicksPackedDesc, at);
    } else {
      __atomic_store_n(reinterpret_cast<uint16_t*>(deviceEvent_ + 2),
                       enable ? kEventFEnable : kEventFDisable, __ATOMIC_RELAXED);
      LogDevice(2, 2);
      if (trace) trace->Kicks(enable, kKicksPackedFlags, 0);
    }
    // Orders the event write before the availability re-check the caller does next.
    if (enable) __atomic_thread_fence(__ATOMIC_SEQ_CST);
  }

  bool Empty() const { return broken || !IsAvail(FlagsAcquire(availPos), availWrap); }

  void Break(uint32_t err) { Fail(err); }

  // The fault plan's view: another buffer id (used-id "not-a-head").
  uint16_t NextOf(uint16_t id) const { return static_cast<uint16_t>((id + 1u) % cfg.num); }
  // Writes `field` (0 addr, 1 len, 2 flags) of the first descriptor of buffer `id`'s chain.
  uint64_t RewriteDesc(uint16_t id, uint8_t field, uint64_t v) {
    const uint32_t pos = slotOfId_[id % cfg.num];
    uint8_t* d = desc_ + 16 * pos;
    const size_t at = field == 0 ? 0 : field == 1 ? 8 : 14;
    const size_t size = field == 0 ? 8 : field == 1 ? 4 : 2;
    uint64_t old = 0;
    std::memcpy(&old, d + at, size);  // little-endian host (virtio 1.x rings are LE)
    std::memcpy(d + at, &v, size);
    LogDesc(pos, at, size);
    return old;
  }

  // §2.8.1: available when AVAIL equals the wrap counter and USED does not.
  static bool IsAvail(uint16_t flags, bool wrap) {
    return bool(flags & kDescFAvail) == wrap && bool(flags & kDescFUsed) != wrap;
  }

 private:
  uint8_t* desc_ = nullptr;
  uint8_t* driverEvent_ = nullptr;
  uint8_t* deviceEvent_ = nullptr;
  const GuestMemory* mem_ = nullptr;
  // Where each popped chain started (encoded), for Rewind; where each id's chain started.
  std::vector<uint16_t> starts_;
  uint32_t startsN_ = 0;
  std::vector<uint16_t> slotOfId_;
  // This batch's fills: ring offset from usedPos of each; where the next one goes.
  std::vector<uint32_t> fillAt_;
  std::vector<uint16_t> fillFlip_;  // used-wrap: flags XORed into each element's (0: none)
  uint32_t flips_ = 0;              // how many elements of the batch have one
  std::vector<uint16_t> fillId_;    // the shadow used descriptors: id and length of each
  std::vector<uint32_t> fillLen_;
  uint32_t fillN_ = 0, fillEnd_ = 0;
  // IN_ORDER batching: the last buffer filled, written at Flush.
  bool batchAny_ = false;
  uint16_t batchId_ = 0;
  uint32_t batchLen_ = 0;

  bool Fail(uint32_t err) {
    broken = true;
    error = err;
    return false;
  }
  void MarkSignalled() {
    signalledUsed = UsedIdx();
    signalledUsedValid = true;
  }
  bool ByFlags(uint16_t flags) {
    const bool sent = flags != kEventFDisable;
    if (trace) trace->Notify(sent, kWhyPackedFlags, cfg.eventIdx, 0, 0, 0, flags);
    return sent;
  }
  void Advance(uint16_t* pos, bool* wrap, uint32_t slots) const {
    uint32_t p = *pos + slots;
    if (p >= cfg.num) {
      p -= cfg.num;
      *wrap = !*wrap;
    }
    *pos = static_cast<uint16_t>(p);
  }
  uint16_t FlagsAcquire(uint32_t pos) const {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(desc_ + 16 * pos + 14), __ATOMIC_ACQUIRE);
  }
  uint16_t IdAt(uint32_t pos) const {
    uint16_t id;
    std::memcpy(&id, desc_ + 16 * pos + 12, 2);
    return id;
  }
  void SetDeviceOffWrap(uint16_t v) {
    __atomic_store_n(reinterpret_cast<uint16_t*>(deviceEvent_), v, __ATOMIC_RELAXED);
    LogDevice(0, 2);
  }
  // The dirty log: when the vring asked for ring logging, the device's writes to the
  // descriptor ring and its event area are logged where they land (as DPDK's vhost does).
  void LogDesc(uint32_t pos, size_t at, size_t len) {
    if (log.On() && cfg.logUsed) log.Mark(mem_->VaToGpa(cfg.descVa + 16 * uint64_t(pos) + at), len);
  }
  void LogDevice(size_t at, size_t len) {
    if (log.On() && cfg.logUsed) log.Mark(mem_->VaToGpa(cfg.usedVa + at), len);
  }

  // Walks the chain starting at availPos (§2.8.6 chains via NEXT, §2.8.7 indirect tables).
  uint32_t ReadChain(Element* e, Segment* segs) {
    e->head = 0;
    e->slots = 0;
    e->outNum = e->inNum = 0;
    e->outLen = e->inLen = 0;
    e->segs = segs;
    uint32_t pos = availPos;
    bool wrap = availWrap;
    bool sawWritable = false;
    uint32_t nsegs = 0;
    for (;;) {
      PackedDesc d;
      std::memcpy(&d, desc_ + 16 * pos, 16);  // read once: the driver may change it under us
      e->slots++;
      if (trace) trace->Desc(d.addr, d.len, d.flags, d.id, false, true);
      // §2.8.6: every descriptor of a list carries correct AVAIL/USED flags, and the first is
      // made available last; a later one not available for its position's wrap counter was
      // never made available (a chain past what the driver wrote, or one longer than the ring
      // reaching its own start).
      if (e->slots > 1 && !IsAvail(d.flags, wrap)) return kDescNotAvailable;
      uint32_t err;
      if (d.flags & kDescFIndirect) {
        // §2.8.13.4: INDIRECT only when negotiated, never in a list linked by NEXT.
        if (!cfg.indirect) return kIndirectNotNegotiated;
        if ((d.flags & kDescFNext) || e->slots > 1) return kIndirectNested;
        // §2.8.7: the table holds len / 16 descriptors, a whole number of them, at least one.
        if (d.len == 0 || d.len % 16 != 0) return kIndirectBadLen;
        const uint8_t* t = mem_->GpaToHostContiguous(d.addr, d.len);
        if (!t) return kAddrOutOfMemory;
        for (uint32_t k = 0; k < d.len / 16; k++) {
          PackedDesc x;
          std::memcpy(&x, t + 16 * k, 16);
          if (trace) trace->Desc(x.addr, x.len, x.flags, 0, true, true);
          // §2.8.7: WRITE is the only valid flag in an indirect table; the rest are ignored.
          err = AddDescriptor(*mem_, e, x.addr, x.len, x.flags & kDescFWrite, &sawWritable, &nsegs);
          if (err != kRingOk) return err;
        }
      } else {
        err = AddDescriptor(*mem_, e, d.addr, d.len, d.flags & kDescFWrite, &sawWritable, &nsegs);
        if (err != kRingOk) return err;
      }
      if (!(d.flags & kDescFNext)) {
        // §2.8.6: "Buffer ID is included in the last descriptor in the list."
        if (d.id >= cfg.num) return kBufferIdOutOfRange;
        e->head = d.id;
        return kRingOk;
      }
      if (++pos == cfg.num) {
        pos = 0;
        wrap = !wrap;
      }
    }
  }
};

}  // namespace vun
