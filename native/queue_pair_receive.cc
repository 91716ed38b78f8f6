// The receive side of a queue pair (receiveq, `toGuest`): frames from the host port or handed
// over by other pairs, routed by steering, placed into the guest's buffers (MRG_RXBUF,
// num_buffers), flushed and notified once per burst; with a fault plan, told lies on the way.
#include <cstring>

#include "memory_fault.h"
#include "net_rules.h"
#include "prefetch.h"
#include "queue_pair.h"

namespace vun {
namespace {

// Copies `len` bytes from `src` into the writable segments of `e` starting at byte `off`, and
// marks the pages written in the dirty log (a no-op while it is off).
uint32_t ScatterIn(const Element& e, uint32_t off, const uint8_t* src, uint32_t len,
                   DirtyLog& log) {
  uint32_t done = 0;
  const Segment* s = e.segs + e.outNum;
  for (uint32_t i = 0; i < e.inNum && done < len; i++) {
    if (off >= s[i].len) {
      off -= s[i].len;
      continue;
    }
    uint32_t n = s[i].len - off;
    if (n > len - done) n = len - done;
    std::memcpy(s[i].host + off, src + done, n);
    log.Mark(s[i].gpa + off, n);
    done += n;
    off = 0;
  }
  return done;
}

// Host address of byte `pos` of the writable part of `e`, or null.
uint8_t* ByteAt(const Element& e, uint32_t pos) {
  const Segment* s = e.segs + e.outNum;
  for (uint32_t i = 0; i < e.inNum; i++) {
    if (pos < s[i].len) return s[i].host + pos;
    pos -= s[i].len;
  }
  return nullptr;
}

// Guest physical address of byte `pos` of the writable part of `e`, or UINT64_MAX.
uint64_t GpaAt(const Element& e, uint32_t pos) {
  const Segment* s = e.segs + e.outNum;
  for (uint32_t i = 0; i < e.inNum; i++) {
    if (pos < s[i].len) return s[i].gpa + pos;
    pos -= s[i].len;
  }
  return UINT64_MAX;
}

// The header of a frame one buffer holds whole, as the guest reads it: num_buffers 1 (§5.1.6.4:
// the number of buffers holding the frame), flags cleared when the guest cannot take them.
inline void WholeHeader(uint8_t* to, int nb, bool clearFlags) {
  if (nb >= 0) {
    to[nb] = 1;
    to[nb + 1] = 0;
  }
  if (clearFlags) to[0] = 0;
}

}  // namespace

int QueuePair::Deliver(const uint8_t* frame, uint32_t len) {
  const uint32_t vr = receiveq_;
  QueueState& q = cfg_.queues[vr];
  if (!q.started || q.broken) return 0;
  MemoryFaultScope scope(vr);
  if (!q.enabled) {
    // A disabled receiveq gets nothing.
    cfg_.Count(vr, kCDropDisabled, 1);
    return 1;
  }
  const ReceiveVerdict verdict = ReceiveRule(cfg_.features, frame[0], frame[1]);
  if (verdict != kReceiveDeliver && verdict != kReceiveClearFlags) {
    cfg_.Count(vr, kCDropMalformed, 1);
    return 1;
  }
  // The common case first: no fault plan for the receiveq, capture or dirty log, and a frame
  // that fits the next chain's first writable segment.
  if (!(faults_ && faults_->Busy(kToGuest)) && !capToGuest_ && !toGuest_.Log().On()) {
    const int r = DeliverWhole(frame, len, verdict == kReceiveClearFlags);
    if (r != kGeneralPath) return r;
  }
  // A fault plan's hook: the frame may be dropped, held or changed (an event, decided once).
  Lies* l = nullptr;
  if (faults_) {
    const PairFaults::Frame f = faults_->Arriving(&l, frame, len, again_);
    if (!f.go) return 1;
    frame = f.data;
    len = f.len;
  }
  const int r = Place(frame, len, verdict, l);
  if (r <= 0) return r;
  burstFrames_++;
  burstBytes_ += len - cfg_.hdrLen;
  progress_ = true;
  if (l && l->duplicate >= 0) DeliverAgain(frame, len, *l);
  if (filled_ >= kFlushEvery) FlushReceiveq();
  return 1;
}

void QueuePair::DeliverAgain(const uint8_t* frame, uint32_t len, const Lies& l) {
  // The same frame once more (no event of its own); lost when no buffer is left for it.
  again_ = true;
  if (Deliver(frame, len) > 0) faults_->Duplicated(l);
  again_ = false;
}

int QueuePair::Place(const uint8_t* frame, uint32_t len, ReceiveVerdict verdict, Lies* l) {
  const uint32_t vr = receiveq_;
  const uint32_t hdr = cfg_.hdrLen;
  const uint16_t firstFill = filled_;
  // Where the first chain holds header bytes 0 and num_buffers: taken when it is popped, as a
  // later burst reuses the element array.
  const int nb = NumBuffersOffset(hdr);
  uint8_t* at[3] = {nullptr, nullptr, nullptr};
  uint64_t atGpa[3] = {UINT64_MAX, UINT64_MAX, UINT64_MAX};  // the same bytes, for the dirty log
  uint16_t taken = 0, firstHead = 0, firstSlots = 1;
  uint32_t firstLen = 0;
  uint32_t copied = 0;
  while (copied < len || taken == 0) {
    const int next = NextToGuest();
    if (next < 0) return -1;
    if (next == 0) {
      // Out of buffers: un-take this frame's chains (they are the last popped).
      toGuest_.Rewind(taken);
      filled_ -= taken;
      return 0;
    }
    const Element& e = toGuestElems_[pos_++];
    if (ReceiveChainRule(cfg_.features, hdr, e.inLen, len, taken) != kChainTake) {
      // Drop the frame, keep the chain (only the first chain of a frame can be refused).
      pos_--;
      cfg_.Count(vr, kCDropTooBig, 1);
      if (l) l->pending = false;
      return 1;
    }
    if (taken == 0) {
      firstHead = e.head;
      firstSlots = e.slots;
      at[0] = ByteAt(e, 0);
      if (nb >= 0) {
        at[1] = ByteAt(e, nb);
        at[2] = ByteAt(e, nb + 1);
      }
      if (toGuest_.Log().On()) {  // the dirty log's addresses, only while it is on
        atGpa[0] = GpaAt(e, 0);
        if (nb >= 0) {
          atGpa[1] = GpaAt(e, nb);
          atGpa[2] = GpaAt(e, nb + 1);
        }
      }
    }
    uint32_t n = ScatterIn(e, 0, frame + copied, len - copied, toGuest_.Log());
    copied += n;
    toGuest_.Fill(e.head, n, filled_++, e.slots);
    if (taken == 0) firstLen = n;
    taken++;
  }
  // The header as the guest reads it: num_buffers = chains holding this frame (1 without
  // MRG_RXBUF), little-endian; flags cleared when the guest cannot take them.
  uint8_t h[12];
  std::memcpy(h, frame, hdr);
  uint32_t numBuffers = taken;
  if (verdict == kReceiveClearFlags) {
    h[0] = 0;
    if (at[0]) *at[0] = 0;
  }
  // A fault plan's hook: num_buffers and the first chain's used element may be lies.
  if (l) numBuffers = TellPlaced(*l, firstHead, firstFill, firstSlots, firstLen, taken);
  if (nb >= 0) {
    h[nb] = static_cast<uint8_t>(numBuffers & 0xff);
    h[nb + 1] = static_cast<uint8_t>(numBuffers >> 8);
    if (at[1]) *at[1] = h[nb];
    if (at[2]) *at[2] = h[nb + 1];
  }
  // The header bytes were written again after the copy marked their pages: mark them again,
  // or a page copied (and its bit cleared) in between would keep the old bytes.
  if (toGuest_.Log().On()) {
    for (int k = 0; k < 3; k++)
      if (at[k] && atGpa[k] != UINT64_MAX) toGuest_.Log().Mark(atGpa[k], 1);
  }
  if (capToGuest_) {
    struct Part {
      const uint8_t* host;
      uint32_t len;
    } part{frame, len};
    uint16_t rules[8];
    const uint32_t nrules = l ? l->Rules(rules, 8) : 0;
    capToGuest_->Frame(0, hdr, len, &part, 1, h, rules, nrules);
  }
  return 1;
}

uint32_t QueuePair::TellPlaced(Lies& l, uint16_t firstHead, uint16_t firstFill, uint16_t firstSlots,
                               uint32_t firstLen, uint16_t taken) {
  const PairFaults::PlacedLie p = faults_->Placed(l, toGuest_, firstHead, taken, firstLen);
  if (p.rewrite) toGuest_.Fill(p.id, p.len, firstFill, firstSlots);
  if (p.wrongWrap) toGuest_.FlipWrap(firstFill);
  if (p.twice) toGuest_.Fill(p.id, firstLen, filled_++, firstSlots);
  return p.numBuffers >= 0 ? static_cast<uint32_t>(p.numBuffers) : taken;
}

// Pops the next burst of receive chains once the cached ones are used up: 1 when a chain waits
// at pos_, 0 when the guest has no buffers, -1 when the ring broke (reported).
int QueuePair::PopToGuest() {
  pos_ = cached_ = 0;
  cached_ = toGuest_.PopBurst(toGuestElems_, kMaxBurst, toGuestSegs_.data());
  if (toGuest_.Broken()) {
    Broken(toGuest_, receiveq_);
    return -1;
  }
  return cached_ ? 1 : 0;
}

// Deliver's short path: the same steps and results (1, 0, -1) for a frame that one chain's
// first writable segment holds whole (a 64-byte frame in a Linux or DPDK receive buffer),
// without the bookkeeping for frames spread over several chains, lies, capture and the dirty
// log; kGeneralPath when the frame does not fit so.
int QueuePair::DeliverWhole(const uint8_t* frame, uint32_t len, bool clearFlags) {
  const int next = NextToGuest();
  if (next <= 0) return next;  // broken, or out of buffers
  const Element& e = toGuestElems_[pos_];
  if (e.inNum == 0) return kGeneralPath;
  const Segment& s = e.segs[e.outNum];
  // ReceiveChainRule passes: the chain holds at least this segment, which holds the frame,
  // header included.
  const uint32_t hdr = cfg_.hdrLen;
  if (s.len < len || len < hdr) return kGeneralPath;
  pos_++;
  std::memcpy(s.host, frame, len);
  WholeHeader(s.host, NumBuffersOffset(hdr), clearFlags);
  toGuest_.Fill(e.head, len, filled_++, e.slots);
  burstFrames_++;
  burstBytes_ += len - hdr;
  progress_ = true;
  if (filled_ >= kFlushEvery) FlushReceiveq();
  return 1;
}

// The common case in a loop of its own: host frames for this pair's receiveq that one chain's
// first writable segment holds whole, with no fault plan, capture, held frame or dirty log (the
// caller checked those for the pass). It does what DeliverWhole does with fewer stores per frame:
// a store to a guest buffer waits for a cache line the driver's core holds, every later store
// queues behind it, and a call, a saved register or a spilled local is a store too. 1: stopped
// at a frame for the general path (in pending_); 0: the host ran dry, the budget ran out or the
// guest has no buffers (*blocked, the frame in pending_); -1: the ring broke (reported).
int QueuePair::ReceiveWhole(uint32_t* budget, bool* blocked) {
  const uint32_t hdr = cfg_.hdrLen;
  const uint64_t features = cfg_.features;
  const int nb = NumBuffersOffset(hdr);
  uint32_t frames = 0;
  uint64_t bytes = 0;
  int result = 0;
  while (*budget != 0) {
    const HostPort::Frame f = port_->Receive(bounce_.data(), kBounceSize, hdr);
    if (f.len == 0) break;
    --*budget;
    const ReceiveVerdict verdict = ReceiveRule(features, f.data[0], f.data[1]);
    if ((verdict != kReceiveDeliver && verdict != kReceiveClearFlags) || f.len < hdr) {
      pending_ = f;  // dropped there, and counted
      result = 1;
      break;
    }
    const int next = NextToGuest();
    if (next <= 0) {
      pending_ = f;
      *blocked = next == 0;
      result = next;
      break;
    }
    const Element& e = toGuestElems_[pos_];
    if (e.inNum == 0 || e.segs[e.outNum].len < f.len) {
      pending_ = f;
      result = 1;
      break;
    }
    pos_++;
    // The next chain's buffer, asked for now so its lines arrive while this frame is copied
    // (one chain ahead measured best: bench/notes.md).
    if (pos_ < cached_) {
      const Element& n = toGuestElems_[pos_];
      if (n.inNum != 0) {
        const uint8_t* p = n.segs[n.outNum].host;
        PrefetchForWrite(p);
        PrefetchForWrite(p + 64);
      }
    }
    uint8_t* to = e.segs[e.outNum].host;
    std::memcpy(to, f.data, f.len);
    WholeHeader(to, nb, verdict == kReceiveClearFlags);
    toGuest_.Fill(e.head, f.len, filled_++, e.slots);
    frames++;
    bytes += f.len - hdr;
    if (filled_ >= kFlushEvery) {
      burstFrames_ += frames;
      burstBytes_ += bytes;
      frames = 0;
      bytes = 0;
      progress_ = true;
      FlushReceiveq();
    }
  }
  if (frames) {
    burstFrames_ += frames;
    burstBytes_ += bytes;
    progress_ = true;
  }
  return result;
}

void QueuePair::FlushReceiveq() {
  // used-burst: until the batch is full.
  if (filled_ == 0 || (faults_ && !faults_->Publish(kToGuest, filled_))) return;
  const uint32_t vr = receiveq_;
  MemoryFaultScope scope(vr);
  toGuest_.Flush(filled_);
  const uint32_t flushed = filled_;
  filled_ = 0;
  cfg_.Publish(vr, toGuest_.LastAvailIdx(), toGuest_.UsedIdx());
  cfg_.Count(vr, kCFrames, burstFrames_);
  cfg_.Count(vr, kCBytes, burstBytes_);
  cfg_.Count(vr, kCBursts, 1);
  burstFrames_ = burstBytes_ = 0;
  Notify(toGuest_, vr, flushed);
}

int QueuePair::Route(const uint8_t* frame, uint32_t len) {
  // One pair: nothing to steer (no call per frame).
  if (steering_.pairs() == 1) return Deliver(frame, len);
  uint32_t target = steering_.Target(pair_, frame, len, cfg_.hdrLen);
  if (target == pair_) return Deliver(frame, len);
  HandoverRing* ring = steering_.RingForProducer(pair_, target);
  if (!ring) return Deliver(frame, len);
  if (!ring->Push(frame, len)) {
    cfg_.Count(2 * target, kCDropNoBuffers, 1);  // the target is not keeping up
    return 1;
  }
  dirtyTargets_ |= uint64_t(1) << target;
  cfg_.Count(receiveq_, kCHandover, 1);
  return 1;
}

void QueuePair::SignalHandover() {
  for (uint32_t t = 0; dirtyTargets_ != 0; t++, dirtyTargets_ >>= 1)
    if (dirtyTargets_ & 1) Wake(steering_.WakeFd(t));
}

// Frames other pairs handed to this receiveq. False when the guest ran out of buffers.
bool QueuePair::DrainHandover() {
  for (uint32_t src = 0; src < steering_.pairs(); src++) {
    HandoverRing* ring = src == pair_ ? nullptr : steering_.Ring(src, pair_);
    if (!ring) continue;
    if (!ring->Drain([this](const uint8_t* f, uint32_t len) { return Deliver(f, len) > 0; }))
      return false;
  }
  return true;
}

// receiveq: frames handed over by other pairs, then frames from the host, into guest buffers
// until there are none or the guest has no buffers left; then wait for one or the other.
void QueuePair::ProcessReceiveq() {
  const uint32_t vr = receiveq_;
  QueueState& q = cfg_.queues[vr];
  if (!q.started || q.broken) return;
  MemoryFaultScope scope(vr);
  const bool hostFrames = port_->Produces();
  // Whether host frames may take ReceiveWhole: nothing to steer, lie, capture, hold or log.
  const bool whole = q.enabled && steering_.pairs() == 1 && !(faults_ && faults_->Busy(kToGuest)) &&
                     !capToGuest_ && !toGuest_.Log().On();
  uint32_t budget = kReceiveBudget;
  if (kicksOn_[0]) {
    toGuest_.SetNotification(false);  // working: no kicks until the guest runs out of buffers
    kicksOn_[0] = false;
  }
  for (;;) {
    bool blocked = !DrainHandover();
    while (!blocked && hostFrames) {
      if (whole && pending_.len == 0 && budget != 0) {
        const int r = ReceiveWhole(&budget, &blocked);
        if (r < 0) return;
        if (r == 0 && !blocked && budget != 0) break;  // the host ran dry
        if (blocked) break;
      }
      if (budget == 0) {
        more_ = true;  // yield: the thread comes back at once
        break;
      }
      budget--;
      if (pending_.len == 0) pending_ = port_->Receive(bounce_.data(), kBounceSize, cfg_.hdrLen);
      if (pending_.len == 0) break;
      int r = Route(pending_.data, pending_.len);
      if (r < 0) return;
      if (r == 0)
        blocked = true;
      else
        pending_.len = 0;
    }
    FlushReceiveq();
    SignalHandover();
    if (q.broken || toGuest_.Broken()) return;
    if (!blocked) break;
    // No guest buffers: stop reading the host, ask for a kick, and look once more.
    WatchHost(false);
    toGuest_.SetNotification(true);
    kicksOn_[0] = true;
    if (toGuest_.Empty()) return;
    toGuest_.SetNotification(false);
    kicksOn_[0] = false;
  }
  // Give back chains popped for frames that did not come.
  if (cached_ > pos_) {
    toGuest_.Rewind(static_cast<uint16_t>(cached_ - pos_));
    cfg_.Publish(vr, toGuest_.LastAvailIdx(), toGuest_.UsedIdx());
  }
  cached_ = pos_ = 0;
  WatchHost(true);
}

}  // namespace vun
