// The split virtqueue, device side (virtio 1.2 §2.7), as the C++ fast path runs it. The TS
// reference model (src/virtio/split-ring.ts) implements the same steps with the same names and
// the same writes to guest memory; differential tests hold them together.
//
// Vocabulary (libvhost-user): lastAvailIdx = next avail entry to read; usedIdx = next used
// entry to publish; pop = read chains, fill = write used entries, flush = publish them,
// notify = decide whether to interrupt the driver.
#pragma once

#include <cstdint>
#include <cstring>

#include "chain_rules.h"
#include "dirty_log.h"
#include "guest_memory.h"
#include "observe.h"
#include "ring_errors.h"
#include "ring_types.h"

namespace vun {

constexpr uint16_t kAvailFNoInterrupt = 1;
constexpr uint16_t kUsedFNoNotify = 1;

struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16, "virtq_desc is 16 bytes");

class SplitRing {
 public:
  RingConfig cfg;
  uint16_t lastAvailIdx = 0;
  uint16_t shadowAvailIdx = 0;
  uint16_t usedIdx = 0;
  uint16_t signalledUsed = 0;
  bool signalledUsedValid = false;
  bool broken = false;
  uint32_t error = kRingOk;
  bool kicksWanted = true;  // SetNotification's last word; a started ring waits for a kick
  // Ring trace (--trace-rings): when set, each step below also writes a record. Off, it costs
  // one predictable branch per step.
  VringObserver* trace = nullptr;
  // Dirty page log (live migration): off unless the device set its area (VHOST_F_LOG_ALL).
  DirtyLog log;

  // Resolves the ring areas in `mem`. False (and broken, kRingAddrInvalid) when an area is not
  // mapped in one region or misaligned (virtio 1.2 §2.7: desc 16, avail 2, used 4 bytes).
  bool Attach(const GuestMemory& mem, const RingConfig& c, uint16_t lastAvail, uint16_t used) {
    cfg = c;
    lastAvailIdx = shadowAvailIdx = lastAvail;
    usedIdx = used;
    kicksWanted = true;
    signalledUsedValid = false;
    batchAny_ = false;
    broken = false;
    error = kRingOk;
    uint64_t n = c.num;
    desc_ = mem.VaToHost(c.descVa, 16 * n);
    avail_ = mem.VaToHost(c.availVa, 6 + 2 * n);
    used_ = mem.VaToHost(c.usedVa, 6 + 8 * n);
    mem_ = &mem;
    if (n == 0 || !desc_ || !avail_ || !used_ || (c.descVa & 15) || (c.availVa & 1) ||
        (c.usedVa & 3)) {
      return Fail(kRingAddrInvalid);
    }
    return true;
  }

  // avail->idx, read with acquire: the ring entries and descriptors the driver wrote before
  // publishing this index are visible to the reads that follow.
  uint16_t AvailIdx() const {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(avail_ + 2), __ATOMIC_ACQUIRE);
  }
  uint16_t AvailFlags() const {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(avail_), __ATOMIC_RELAXED);
  }
  uint16_t UsedEvent() const {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(avail_ + 4 + 2 * cfg.num), __ATOMIC_RELAXED);
  }

  // Pops up to `max` chains into caller-owned `elems` and `segs` (kBurstSegs). Returns how
  // many; on a driver violation the ring is marked broken and `error` set (elements popped
  // before the bad chain are still returned).
  uint32_t PopBurst(Element* elems, uint32_t max, Segment* segs) {
    if (broken) return 0;
    uint32_t n = 0, used = 0;
    while (n < max && kBurstSegs - used >= kMaxChainSegs) {
      if (lastAvailIdx == shadowAvailIdx) {
        shadowAvailIdx = AvailIdx();
        if (trace) trace->Avail(shadowAvailIdx, lastAvailIdx);
        // §2.7.13.3: idx only moves forward, by at most the queue size past what we read.
        if (static_cast<uint16_t>(shadowAvailIdx - lastAvailIdx) > cfg.num) {
          Fail(kAvailIdxJump);
          break;
        }
        if (lastAvailIdx == shadowAvailIdx) break;
      }
      Element& e = elems[n];
      uint32_t err = ReadChain(&e, segs + used);
      if (trace) {
        bool ok = err == kRingOk;
        trace->Chain(ok ? e.head : PeekHead(), err, ok ? e.outLen : 0, ok ? e.inLen : 0);
      }
      if (err != kRingOk) {
        Fail(err);
        break;
      }
      used += e.outNum + e.inNum;
      lastAvailIdx++;
      n++;
    }
    // §2.7.10: with EVENT_IDX the device asks for a kick once the driver passes avail_event;
    // only while it wants kicks (a device at work leaves avail_event behind, so the driver
    // stops kicking, as Linux's vhost does).
    if (cfg.eventIdx && kicksWanted && !broken) SetAvailEvent(lastAvailIdx);
    return n;
  }

  // Gives back the last `count` popped chains (not yet filled): they are read again later.
  void Rewind(uint16_t count) { lastAvailIdx -= count; }

  // Writes used entry `idx` of the batch being filled: chain `head` (virtq_used_elem.id is 32
  // bits), `len` bytes written.
  void Fill(uint32_t head, uint32_t len, uint16_t idx, uint16_t /*slots*/ = 1) {
    if (cfg.inOrderBatch) {
      if (!batchAny_ || idx >= batchIdx_) {
        batchAny_ = true;
        batchId_ = head;
        batchLen_ = len;
        batchIdx_ = idx;
      }
      return;
    }
    WriteUsed(head, len, idx);
  }

  void WriteUsed(uint32_t head, uint32_t len, uint16_t idx) {
    uint8_t* ent = used_ + 4 + 8 * static_cast<uint16_t>((usedIdx + idx) % cfg.num);
    uint32_t id = head;
    std::memcpy(ent, &id, 4);
    std::memcpy(ent + 4, &len, 4);
    LogUsed(ent - used_, 8);
    if (trace) trace->Used(static_cast<uint16_t>((usedIdx + idx) % cfg.num), id, len);
  }

  // Publishes `count` filled entries with one store-release of used->idx: the entries and the
  // buffer contents written before are visible to a driver that reads the new index.
  void Flush(uint16_t count) {
    // §2.7.9 IN_ORDER: one used entry for the batch (its last buffer's id) in the first slot;
    // used->idx still moves by the batch's size.
    if (cfg.inOrderBatch && batchAny_ && count > 0) WriteUsed(batchId_, batchLen_, 0);
    batchAny_ = false;
    usedIdx = static_cast<uint16_t>(usedIdx + count);
    __atomic_store_n(reinterpret_cast<uint16_t*>(used_ + 2), usedIdx, __ATOMIC_RELEASE);
    LogUsed(2, 2);
    log.Sync();  // once per burst, after every write the burst made
    if (trace) trace->Flush(usedIdx, count);
  }

  // Whether the driver wants an interrupt for what was flushed since the last one.
  bool NeedNotify() {
    // Full barrier: our used->idx store must be ordered before we read the driver's
    // used_event / flags (store-load), or we could miss a driver that just re-enabled them.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    // §2.7.10 / VIRTIO_F_NOTIFY_ON_EMPTY: notify when the ring ran empty, whatever the flags.
    if (cfg.notifyOnEmpty && AvailIdx() == lastAvailIdx) {
      MarkSignalled();
      if (trace) trace->Notify(true, kWhyOnEmpty, cfg.eventIdx, 0, 0, 0, 0);
      return true;
    }
    if (!cfg.eventIdx) {
      uint16_t flags = AvailFlags();
      bool sent = !(flags & kAvailFNoInterrupt);
      if (trace) trace->Notify(sent, kWhyFlags, false, 0, 0, 0, flags);
      return sent;
    }
    uint16_t old = signalledUsed;
    bool valid = signalledUsedValid;
    MarkSignalled();
    uint16_t event = UsedEvent();
    bool sent = !valid || NeedEvent(event, usedIdx, old);
    if (trace) trace->Notify(sent, valid ? kWhyEventIdx : kWhyFirst, true, event, usedIdx, old, 0);
    return sent;
  }

  // Enables or suppresses the driver's kicks (used->flags or avail_event).
  void SetNotification(bool enable) {
    kicksWanted = enable;
    if (cfg.eventIdx) {
      if (enable) {
        uint16_t a = AvailIdx();
        SetAvailEvent(a);
        if (trace) trace->Kicks(true, kKicksSplitEvent, a);
      }
    } else {
      if (trace) trace->Kicks(enable, kKicksSplitFlags, 0);
      uint16_t* f = reinterpret_cast<uint16_t*>(used_);
      uint16_t v = __atomic_load_n(f, __ATOMIC_RELAXED);
      v = enable ? (v & ~kUsedFNoNotify) : (v | kUsedFNoNotify);
      __atomic_store_n(f, v, __ATOMIC_RELAXED);
      LogUsed(0, 2);
    }
    // Orders the flag/event write before the avail->idx re-check the caller does next.
    if (enable) __atomic_thread_fence(__ATOMIC_SEQ_CST);
  }

  bool Empty() { return AvailIdx() == lastAvailIdx; }

  // The fault plan's view of the descriptor table (used-id "not-a-head", desc-rewrite); the
  // device itself reads a chain once, in ReadChain.
  // The descriptor after `head` in its chain (§2.7.5 VIRTQ_DESC_F_NEXT), or head+1 without one.
  uint16_t NextOf(uint16_t head) const {
    VringDesc d;
    std::memcpy(&d, desc_ + 16 * (head % cfg.num), 16);
    return (d.flags & kDescFNext) && d.next < cfg.num
               ? d.next
               : static_cast<uint16_t>((head + 1u) % cfg.num);
  }
  // Writes `field` (kDescAddr/kDescLen/kDescFlags) of descriptor `i` in guest memory; returns
  // the old value.
  enum DescField : uint8_t { kDescAddr, kDescLen, kDescFlags };
  uint64_t RewriteDesc(uint16_t i, DescField field, uint64_t v) {
    uint8_t* d = desc_ + 16 * (i % cfg.num);
    const size_t at = field == kDescAddr ? 0 : field == kDescLen ? 8 : 12;
    const size_t size = field == kDescAddr ? 8 : field == kDescLen ? 4 : 2;
    uint64_t old = 0;
    std::memcpy(&old, d + at, size);  // little-endian host (virtio 1.x rings are LE)
    std::memcpy(d + at, &v, size);
    if (log.On()) log.Mark(mem_->VaToGpa(cfg.descVa + 16 * (i % cfg.num) + at), size);
    return old;
  }

  // vring_need_event() from the virtio spec §2.7.10.
  // Marks the ring broken with `err` from outside the walk (a memory fault): it pops nothing more.
  void Break(uint32_t err) { Fail(err); }

  static bool NeedEvent(uint16_t event, uint16_t newIdx, uint16_t old) {
    return static_cast<uint16_t>(newIdx - event - 1) < static_cast<uint16_t>(newIdx - old);
  }

 private:
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  const GuestMemory* mem_ = nullptr;
  // IN_ORDER batching: the last element filled in this batch, written at Flush.
  bool batchAny_ = false;
  uint32_t batchId_ = 0, batchLen_ = 0;
  uint16_t batchIdx_ = 0;

  bool Fail(uint32_t err) {
    broken = true;
    error = err;
    return false;
  }

  void MarkSignalled() {
    signalledUsed = usedIdx;
    signalledUsedValid = true;
  }

  void SetAvailEvent(uint16_t v) {
    __atomic_store_n(reinterpret_cast<uint16_t*>(used_ + 4 + 8 * cfg.num), v, __ATOMIC_RELAXED);
    LogUsed(4 + 8 * uint64_t(cfg.num), 2);
  }

  // vhost-user.rst "Migration": a used ring write is logged at log_guest_addr + its offset in
  // the ring, when the vring asked for it (VHOST_VRING_F_LOG).
  void LogUsed(uint64_t offset, uint64_t len) {
    if (log.On() && cfg.logUsed) log.Mark(cfg.logGuestAddr + offset, len);
  }

  uint16_t PeekHead() const {
    uint16_t head;
    std::memcpy(&head, avail_ + 4 + 2 * (lastAvailIdx % cfg.num), 2);
    return head;
  }

  // Walks the chain at the current avail slot (§2.7.5, §2.7.5.3 indirect descriptors).
  uint32_t ReadChain(Element* e, Segment* segs) {
    uint16_t slot = lastAvailIdx % cfg.num;
    uint16_t head;
    std::memcpy(&head, avail_ + 4 + 2 * slot, 2);
    if (head >= cfg.num) return kHeadOutOfRange;
    e->head = head;
    e->slots = 1;
    e->outNum = e->inNum = 0;
    e->outLen = e->inLen = 0;
    e->segs = segs;
    const uint8_t* table = desc_;
    uint32_t tableSize = cfg.num;
    uint32_t i = head;
    uint32_t count = 0;
    bool inIndirect = false;
    bool sawWritable = false;
    uint32_t nsegs = 0;
    for (;;) {
      VringDesc d;
      std::memcpy(&d, table + 16 * i, 16);  // read once: the driver may change it under us
      if (trace) trace->Desc(d.addr, d.len, d.flags, d.next, inIndirect);
      if (d.flags & kDescFIndirect) {
        // §2.7.5.3.1: the driver MUST NOT set INDIRECT and NEXT together, nor nest tables.
        if (!cfg.indirect) return kIndirectNotNegotiated;
        if (inIndirect || (d.flags & kDescFNext)) return kIndirectNested;
        if (d.len == 0 || d.len % 16 != 0) return kIndirectBadLen;
        const uint8_t* t = mem_->GpaToHostContiguous(d.addr, d.len);
        if (!t) return kAddrOutOfMemory;
        table = t;
        tableSize = d.len / 16;
        i = 0;
        count = 0;
        inIndirect = true;
        continue;
      }
      if (++count > tableSize) return kDescLoop;
      const uint32_t err =
          AddDescriptor(*mem_, e, d.addr, d.len, d.flags & kDescFWrite, &sawWritable, &nsegs);
      if (err != kRingOk) return err;
      if (!(d.flags & kDescFNext)) break;
      if (d.next >= tableSize) return kNextOutOfRange;
      i = d.next;
    }
    return kRingOk;
  }
};

}  // namespace vun
