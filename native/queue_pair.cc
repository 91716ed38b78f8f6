#include "queue_pair.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <cstring>

#include "net_rules.h"

namespace vun {
namespace {

constexpr uint32_t kBounceSize = 65536 + 12 + 16;  // a 64 KiB GSO frame and its header
constexpr uint16_t kFlushEvery = 32;

void DrainEventfd(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof(v)) == sizeof(v)) {
  }
}

void Wake(int fd) {
  uint64_t one = 1;
  ssize_t w = write(fd, &one, sizeof(one));
  (void)w;
}

// Copies `len` bytes from `src` into the writable segments of `e` starting at byte `off`.
uint32_t ScatterIn(const Element& e, uint32_t off, const uint8_t* src, uint32_t len) {
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

}  // namespace

QueuePair::QueuePair(DeviceConfig& cfg, Steering& steering, DeviceEvents& events, uint32_t pair)
    : cfg_(cfg),
      steering_(steering),
      events_(events),
      pair_(pair),
      receiveq_(2 * pair),
      transmitq_(2 * pair + 1),
      port_(MakeHostPort(HostKind::kNull, -1, 0)),
      bounce_(kBounceSize),
      toGuestSegs_(kBurstSegs),
      flowScratch_(128),
      fromGuestSegs_(kBurstSegs),
      fromGuestBounce_(kBounceSize),
      lieBuf_(kBounceSize) {}

bool QueuePair::Active() const {
  return cfg_.queues[receiveq_].started || cfg_.queues[transmitq_].started;
}

void QueuePair::Broken(SplitRing& ring, uint32_t vring) {
  QueueState& q = cfg_.queues[vring];
  q.broken = true;
  q.error = ring.error;
  cfg_.Count(vring, kCRingError, 1);
  events_.VringBroken(vring, ring.error);  // logged once, by JS
}

void QueuePair::Notify(SplitRing& ring, uint32_t vring) {
  if (ring.NeedNotify() && !NotifyHeldBack(vring)) {
    const int fd = cfg_.queues[vring].callFd;
    if (fd >= 0) Wake(fd);
    cfg_.Count(vring, kCNotifySent, 1);
  } else {
    cfg_.Count(vring, kCNotifySuppressed, 1);
  }
}

void QueuePair::WatchHost(bool on) {
  const int fd = port_->Fd();
  if (fd < 0 || epfd_ < 0 || hostWatched_ == on) return;
  epoll_event ev{};
  ev.events = on ? static_cast<uint32_t>(EPOLLIN) : 0u;
  ev.data.u64 = tag_ | kHost;
  epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
  hostWatched_ = on;
}

// transmitq: pop chains, hand each frame to the host, give the chains back used (len 0: the
// device wrote nothing into them), one flush and one notification decision per burst.
void QueuePair::ProcessTransmitq() {
  const uint32_t vt = transmitq_;
  QueueState& q = cfg_.queues[vt];
  if (!q.started || q.broken) return;
  const uint32_t hdr = cfg_.hdrLen;
  for (;;) {
    uint32_t n = fromGuest_.PopBurst(fromGuestElems_, kMaxBurst, fromGuestSegs_.data());
    uint16_t filled = 0;
    for (uint32_t i = 0; i < n; i++) {
      const Element& e = fromGuestElems_[i];
      // With a fault plan, each chain popped is an event (one predictable branch without).
      Lies* l = nullptr;
      if (faultsFromGuest_) {
        l = &fromGuestLies_;
        TakeLies(*faultsFromGuest_, vt, l);
      }
      if (!l) {
        fromGuest_.Fill(e.head, 0, filled++);
      } else if (l->withhold >= 0) {
        // Never completed: the chain stays in flight for the guest (the device knows it is done).
        Record(vt, l->withhold, kFaultWithhold, kFieldId, e.head, l->event, e.head, 0);
      } else {
        uint32_t id, len;
        LieUsed(vt, *l, e.head, 0, &id, &len);
        fromGuest_.Fill(id, len, filled++);
        lastUsedId_[1] = id;  // used-id "repeat" tells this one again
        usedAny_[1] = true;
      }
      if (e.outLen < hdr) {
        cfg_.Count(vt, kCDropMalformed, 1);
        continue;
      }
      if (capFromGuest_) capFromGuest_->Frame(1, hdr, e.outLen, e.segs, e.outNum);
      if (RecordsFlow(steering_.FlowAffinity(), q.enabled))
        steering_.RecordFlow(pair_, e, hdr, flowScratch_.data());
      if (!q.enabled) {
        // A started but disabled transmitq is drained and its frames discarded.
        cfg_.Count(vt, kCDropDisabled, 1);
        continue;
      }
      if (l && l->drop >= 0) continue;
      const uint32_t copies = l && l->duplicate >= 0 ? 2 : 1;
      for (uint32_t c = 0; c < copies; c++) {
        uint32_t looped = 0;
        HostPort::Sent sent = SendFromGuest(e, l, &looped);
        if (sent == HostPort::Sent::kFailed) {
          cfg_.Count(vt, kCDropHostError, 1);
          break;
        }
        if (sent == HostPort::Sent::kTooBig) {
          cfg_.Count(vt, kCDropTooBig, 1);
          break;
        }
        if (sent == HostPort::Sent::kLooped && Route(fromGuestBounce_.data(), looped) == 0) {
          // Back to the guest: on this pair's receiveq, or where steering says.
          cfg_.Count(receiveq_, kCDropNoBuffers, 1);
        }
        if (c == 1) Record(vt, l->duplicate, kFaultDuplicate, kFieldNone, e.head, l->event, 0, 0);
        cfg_.Count(vt, kCFrames, 1);
        cfg_.Count(vt, kCBytes, e.outLen - hdr);
      }
      if (l) RecordFrameLies(vt, *l);
    }
    if (n > 0) {
      if (filled) {
        fromGuest_.Flush(filled);
        Notify(fromGuest_, vt);
      }
      progress_ = true;
      cfg_.Count(vt, kCBursts, 1);
      cfg_.Publish(vt, fromGuest_.lastAvailIdx, fromGuest_.usedIdx);
      FlushReceiveq();  // loopback frames delivered here
      SignalHandover();
    }
    if (fromGuest_.broken) {
      Broken(fromGuest_, vt);
      return;
    }
    if (n == 0) {
      // Empty: ask for kicks again, then look once more (the driver may have added meanwhile).
      fromGuest_.SetNotification(true);
      if (fromGuest_.Empty() || q.kickFd < 0) return;
      fromGuest_.SetNotification(false);
    }
  }
}

int QueuePair::Deliver(const uint8_t* frame, uint32_t len) {
  const uint32_t vr = receiveq_;
  QueueState& q = cfg_.queues[vr];
  const uint32_t hdr = cfg_.hdrLen;
  if (!q.started || q.broken) return 0;
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
  // With a fault plan, each frame for the guest is an event, decided once: a frame that waits
  // for buffers keeps its lies (one predictable branch without a plan).
  Lies* l = nullptr;
  if (faultsToGuest_ && !inDuplicate_) {
    l = &toGuestLies_;
    if (!l->pending) TakeLies(*faultsToGuest_, vr, l);
    if (l->drop >= 0) {
      l->pending = false;
      return 1;
    }
    if (l->ChangesFrame()) {
      len = LieFrame(*l, frame, len);
      frame = lieBuf_.data();
    }
  }
  uint16_t firstFill = filled_;
  // Where the first chain holds header bytes 0 and num_buffers: taken when it is popped, as a
  // later burst reuses the element array.
  const int nb = NumBuffersOffset(hdr);
  uint8_t* at[3] = {nullptr, nullptr, nullptr};
  uint16_t taken = 0, firstHead = 0, lastHead = 0;
  uint32_t firstLen = 0;
  uint32_t copied = 0;
  while (copied < len || taken == 0) {
    if (pos_ == cached_) {
      pos_ = cached_ = 0;
      cached_ = toGuest_.PopBurst(toGuestElems_, kMaxBurst, toGuestSegs_.data());
      if (toGuest_.broken) {
        Broken(toGuest_, vr);
        return -1;
      }
      if (cached_ == 0) {
        // Out of buffers: un-take this frame's chains (they are the last popped).
        toGuest_.Rewind(taken);
        filled_ -= taken;
        return 0;
      }
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
      at[0] = ByteAt(e, 0);
      if (nb >= 0) {
        at[1] = ByteAt(e, nb);
        at[2] = ByteAt(e, nb + 1);
      }
    }
    uint32_t n = ScatterIn(e, 0, frame + copied, len - copied);
    copied += n;
    toGuest_.Fill(e.head, n, filled_++);
    if (taken == 0) firstLen = n;
    lastHead = e.head;
    taken++;
  }
  // The header as the guest reads it: num_buffers = chains holding this frame (1 without
  // MRG_RXBUF), little-endian; flags cleared when the guest cannot take them.
  uint8_t h[12];
  std::memcpy(h, frame, hdr);
  if (nb >= 0) {
    h[nb] = static_cast<uint8_t>(taken & 0xff);
    h[nb + 1] = static_cast<uint8_t>(taken >> 8);
    if (at[1]) *at[1] = h[nb];
    if (at[2]) *at[2] = h[nb + 1];
  }
  if (verdict == kReceiveClearFlags) {
    h[0] = 0;
    if (at[0]) *at[0] = 0;
  }
  if (l) {
    RecordFrameLies(vr, *l);
    if (l->header[6] >= 0 && nb >= 0) {
      // num_buffers (6): told after the device wrote the true count.
      Record(vr, l->header[6], kFaultHeader, 6, kNoRing, l->event, taken, l->headerValue[6]);
      h[nb] = static_cast<uint8_t>(l->headerValue[6]);
      h[nb + 1] = static_cast<uint8_t>(l->headerValue[6] >> 8);
      if (at[1]) *at[1] = h[nb];
      if (at[2]) *at[2] = h[nb + 1];
    }
    uint32_t reported = firstHead;
    if (l->usedId >= 0 || l->usedLen >= 0) {
      // The first chain's used element, written again with the lie.
      uint32_t usedLen;
      LieUsed(vr, *l, firstHead, firstLen, &reported, &usedLen);
      toGuest_.Fill(reported, usedLen, firstFill);
    }
    lastUsedId_[0] = taken > 1 ? lastHead : reported;  // used-id "repeat" tells this one again
    usedAny_[0] = true;
    l->pending = false;
  }
  if (capToGuest_) {
    struct Part {
      const uint8_t* host;
      uint32_t len;
    } part{frame, len};
    capToGuest_->Frame(0, hdr, len, &part, 1, h);
  }
  burstFrames_++;
  burstBytes_ += len - hdr;
  progress_ = true;
  if (l && l->duplicate >= 0) {
    // The same frame once more (no event of its own); lost when no buffer is left for it.
    inDuplicate_ = true;
    if (Deliver(frame, len) > 0)
      Record(vr, l->duplicate, kFaultDuplicate, kFieldNone, kNoRing, l->event, 0, 0);
    inDuplicate_ = false;
  }
  if (filled_ >= kFlushEvery) FlushReceiveq();
  return 1;
}

void QueuePair::FlushReceiveq() {
  if (filled_ == 0) return;
  const uint32_t vr = receiveq_;
  toGuest_.Flush(filled_);
  filled_ = 0;
  cfg_.Publish(vr, toGuest_.lastAvailIdx, toGuest_.usedIdx);
  cfg_.Count(vr, kCFrames, burstFrames_);
  cfg_.Count(vr, kCBytes, burstBytes_);
  cfg_.Count(vr, kCBursts, 1);
  burstFrames_ = burstBytes_ = 0;
  Notify(toGuest_, vr);
}

int QueuePair::Route(const uint8_t* frame, uint32_t len) {
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
  const bool hostFrames = port_->Produces();
  for (;;) {
    bool blocked = !DrainHandover();
    while (!blocked && hostFrames) {
      if (pendingLen_ == 0) pendingLen_ = port_->Receive(bounce_.data(), kBounceSize, cfg_.hdrLen);
      if (pendingLen_ == 0) break;
      int r = Route(bounce_.data(), pendingLen_);
      if (r < 0) return;
      if (r == 0)
        blocked = true;
      else
        pendingLen_ = 0;
    }
    FlushReceiveq();
    SignalHandover();
    if (q.broken || toGuest_.broken) return;
    if (!blocked) break;
    // No guest buffers: stop reading the host, ask for a kick, and look once more.
    WatchHost(false);
    toGuest_.SetNotification(true);
    if (toGuest_.Empty()) return;
  }
  // Give back chains popped for frames that did not come.
  if (cached_ > pos_) {
    toGuest_.Rewind(static_cast<uint16_t>(cached_ - pos_));
    cfg_.Publish(vr, toGuest_.lastAvailIdx, toGuest_.usedIdx);
  }
  cached_ = pos_ = 0;
  WatchHost(true);
}

bool QueuePair::Setup(int epfd, uint64_t tag) {
  QueueState& qr = cfg_.queues[receiveq_];
  QueueState& qt = cfg_.queues[transmitq_];
  epfd_ = epfd;
  tag_ = tag;
  auto add = [this](int fd, uint32_t kind) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag_ | kind;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  };
  add(steering_.WakeFd(pair_), kHandover);
  bool polled = false;
  if (qr.started && !qr.broken) {
    if (!toGuest_.Attach(cfg_.mem, qr.cfg, qr.lastAvailIdx, qr.usedIdx))
      Broken(toGuest_, receiveq_);
    if (qr.kickFd >= 0)
      add(qr.kickFd, kReceiveqKick);
    else
      polled = true;
    cfg_.Publish(receiveq_, qr.lastAvailIdx, qr.usedIdx);
  }
  if (qt.started && !qt.broken) {
    if (!fromGuest_.Attach(cfg_.mem, qt.cfg, qt.lastAvailIdx, qt.usedIdx))
      Broken(fromGuest_, transmitq_);
    if (qt.kickFd >= 0)
      add(qt.kickFd, kTransmitqKick);
    else
      polled = true;
    cfg_.Publish(transmitq_, qt.lastAvailIdx, qt.usedIdx);
  }
  hostWatched_ = false;
  // A producing port without an fd (null:source) never runs dry: like the host, it ends each
  // pass waiting for guest buffers, that is for a receiveq kick.
  if (qr.started && port_->Fd() >= 0) {
    add(port_->Fd(), kHost);
    hostWatched_ = true;
  }
  cached_ = pos_ = 0;
  filled_ = 0;
  faultsToGuest_ = cfg_.FaultsOf(receiveq_);
  faultsFromGuest_ = cfg_.FaultsOf(transmitq_);
  faultLogToGuest_ = cfg_.FaultLogOf(receiveq_);
  faultLogFromGuest_ = cfg_.FaultLogOf(transmitq_);
  toGuestLies_.pending = false;
  toGuest_.trace = cfg_.TraceOf(receiveq_);
  fromGuest_.trace = cfg_.TraceOf(transmitq_);
  capToGuest_ = cfg_.CaptureOf(receiveq_);
  capFromGuest_ = cfg_.CaptureOf(transmitq_);
  return polled;
}

void QueuePair::OnEvent(uint32_t kind) {
  switch (kind) {
    case kReceiveqKick:
      DrainEventfd(cfg_.queues[receiveq_].kickFd);
      cfg_.Count(receiveq_, kCKicks, 1);
      WatchHost(true);
      break;
    case kTransmitqKick:
      DrainEventfd(cfg_.queues[transmitq_].kickFd);
      cfg_.Count(transmitq_, kCKicks, 1);
      break;
    case kHandover:
      DrainEventfd(steering_.WakeFd(pair_));
      break;
    default:
      break;
  }
}

void QueuePair::Teardown() {
  QueueState& qr = cfg_.queues[receiveq_];
  QueueState& qt = cfg_.queues[transmitq_];
  FlushReceiveq();
  SignalHandover();
  if (cached_ > pos_) toGuest_.Rewind(static_cast<uint16_t>(cached_ - pos_));
  cached_ = pos_ = 0;
  if (qr.started) {
    qr.lastAvailIdx = toGuest_.lastAvailIdx;
    qr.usedIdx = toGuest_.usedIdx;
  }
  if (qt.started) {
    qt.lastAvailIdx = fromGuest_.lastAvailIdx;
    qt.usedIdx = fromGuest_.usedIdx;
  }
  cfg_.Publish(receiveq_, qr.lastAvailIdx, qr.usedIdx);
  cfg_.Publish(transmitq_, qt.lastAvailIdx, qt.usedIdx);
  epfd_ = -1;
  hostWatched_ = false;
}

}  // namespace vun
