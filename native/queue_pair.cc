#include "queue_pair.h"

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstring>

#include "memory_fault.h"
#include "net_rules.h"

namespace vun {
namespace {

void DrainEventfd(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof(v)) == sizeof(v)) {
  }
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
      lieBuf_(kBounceSize),
      timerFd_(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) {}

QueuePair::~QueuePair() {
  if (timerFd_ >= 0) close(timerFd_);
}

void QueuePair::SetPort(std::unique_ptr<HostPort> port) {
  // A frame still waiting for guest buffers outlives the port it came from: keep a copy.
  if (pending_.len && pending_.data != bounce_.data()) {
    std::memmove(bounce_.data(), pending_.data, pending_.len);
    pending_.data = bounce_.data();
  }
  port_ = std::move(port);
}

bool QueuePair::Active() const {
  return cfg_.queues[receiveq_].started || cfg_.queues[transmitq_].started;
}

void QueuePair::Broken(Vring& ring, uint32_t vring) {
  // A walk that failed on the zero page the SIGBUS handler put in failed because the memory
  // went away, not because the driver wrote something wrong: say so.
  if (TakeMemoryFault(vring)) ring.Break(kMemoryFault);
  QueueState& q = cfg_.queues[vring];
  q.broken = true;
  q.error = ring.Error();
  cfg_.Count(vring, kCRingError, 1);
  events_.VringBroken(vring, ring.Error());  // logged once, by JS
}

void QueuePair::TakeMemoryFaults() {
  const QueueState& qr = cfg_.queues[receiveq_];
  const QueueState& qt = cfg_.queues[transmitq_];
  if (TakeMemoryFault(receiveq_) && qr.started && !qr.broken) {
    toGuest_.Break(kMemoryFault);
    Broken(toGuest_, receiveq_);
  }
  if (TakeMemoryFault(transmitq_) && qt.started && !qt.broken) {
    fromGuest_.Break(kMemoryFault);
    Broken(fromGuest_, transmitq_);
  }
}

void QueuePair::Notify(Vring& ring, uint32_t vring, uint32_t frames) {
  const uint16_t signalled = ring.SignalledUsed();
  const bool signalledValid = ring.SignalledUsedValid();
  bool send = ring.NeedNotify();
  if (send && NotifyHeldBack(vring)) {
    // notify-drop: the interrupt is owed, not sent. The ring forgets it was decided, so the
    // first decision after the window (EVENT_IDX compares used_event with the last one sent)
    // interrupts the driver for everything that piled up.
    ring.SetSignalled(signalled, signalledValid);
    send = false;
  }
  const int d = vring == receiveq_ ? 0 : 1;
  const int fd = cfg_.queues[vring].callFd;
  if (coalesceOn_[d]) {
    // Coalescing: the ring said whether; this says when. Entries flushed while an interrupt is
    // held ride on it, asked for or not.
    Coalescer& c = coalesce_[d];
    VringObserver* trace = ring.Trace();
    const int64_t now = MonotonicNs();
    const int64_t lastNs = c.LastSentNs();
    switch (c.Flushed(cfg_.coalesce, now, frames, send)) {
      case Coalescer::kNone:
        break;
      case Coalescer::kSend:
        if (trace) {
          const bool early = c.LastReason() == Coalescer::kFrames;
          trace->Coalesce(early ? kCoalesceSentFrames : kCoalesceSentIdle, cfg_.coalesce.mode,
                          c.SentFrames(), early ? 0 : static_cast<uint64_t>(now - lastNs) / 1000);
        }
        send = true;
        break;
      case Coalescer::kHold:
        if (trace)
          trace->Coalesce(kCoalesceHeld, cfg_.coalesce.mode, c.OwedFrames(),
                          static_cast<uint64_t>(c.DueNs() - now) / 1000);
        cfg_.Count(vring, kCNotifyCoalesced, 1);
        return;
      case Coalescer::kJoin:
        if (trace) trace->Coalesce(kCoalesceJoined, cfg_.coalesce.mode, c.OwedFrames(), 0);
        cfg_.Count(vring, kCNotifyCoalesced, 1);
        return;
      case Coalescer::kWait:
        cfg_.Count(vring, kCNotifySuppressed, 1);
        return;
    }
  }
  if (send && notifyDelayNs_[d] > 0) {
    // notify-delay: the interrupt goes out later (ReleaseHeld); one pending at a time.
    const int64_t at = MonotonicNs() + notifyDelayNs_[d];
    if (at < notifyAtNs_[d]) notifyAtNs_[d] = at;
    send = false;
  }
  notifyDelayNs_[d] = 0;
  if (send) {
    if (fd >= 0) Wake(fd);
    cfg_.Count(vring, kCNotifySent, 1);
  } else {
    cfg_.Count(vring, kCNotifySuppressed, 1);
  }
  // notify-storm: interrupts with nothing new behind them (an eventfd coalesces writes the
  // front-end has not read yet).
  for (; stormN_[d] > 0; stormN_[d]--)
    if (fd >= 0) Wake(fd);
}

void QueuePair::SendHeld(int d, CoalesceAction why) {
  const uint32_t v = d == 0 ? receiveq_ : transmitq_;
  const int fd = cfg_.queues[v].callFd;
  if (fd >= 0) Wake(fd);
  cfg_.Count(v, kCNotifySent, 1);
  VringObserver* trace = (d == 0 ? toGuest_ : fromGuest_).Trace();
  if (trace) trace->Coalesce(why, cfg_.coalesce.mode, coalesce_[d].SentFrames(), 0);
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
  MemoryFaultScope scope(vt);
  const uint32_t hdr = cfg_.hdrLen;
  if (kicksOn_[1]) {
    fromGuest_.SetNotification(false);  // working: no kicks until the ring runs empty
    kicksOn_[1] = false;
  }
  for (uint32_t bursts = 0;; bursts++) {
    if (bursts == kTransmitBursts) {
      more_ = true;  // yield (notifications stay off): the thread comes back at once
      return;
    }
    uint32_t n = fromGuest_.PopBurst(fromGuestElems_, kMaxBurst, fromGuestSegs_.data());
    uint16_t filled = heldUsed_[1];  // used-burst: written, not published yet
    for (uint32_t i = 0; i < n; i++) {
      const Element& e = fromGuestElems_[i];
      // With a fault plan, each chain popped is an event (one predictable branch without).
      Lies* l = nullptr;
      if (faultsFromGuest_) {
        l = &fromGuestLies_;
        TakeLies(*faultsFromGuest_, vt, l);
      }
      if (l) TakeNotifyLies(vt, *l, e.head);
      if (!l) {
        fromGuest_.Fill(e.head, 0, filled++, e.slots);
      } else if (l->withhold >= 0) {
        // Never completed: the chain stays in flight for the guest (the device knows it is done).
        Record(vt, l->withhold, kFaultWithhold, kFieldId, e.head, l->event, e.head, 0);
      } else {
        uint32_t id, len;
        LieUsed(vt, *l, e.head, 0, &id, &len);
        fromGuest_.Fill(id, len, filled++, e.slots);
        if (l->Twice()) fromGuest_.Fill(id, len, filled++, e.slots);  // completed a second time
      }
      if (e.outLen < hdr) {
        cfg_.Count(vt, kCDropMalformed, 1);
        continue;
      }
      if (capFromGuest_) {
        uint16_t rules[8];
        const uint32_t nrules = l ? l->Rules(rules, 8) : 0;
        capFromGuest_->Frame(1, hdr, e.outLen, e.segs, e.outNum, nullptr, rules, nrules);
      }
      if (RecordsFlow(steering_.FlowAffinity(), q.enabled))
        steering_.RecordFlow(pair_, e, hdr, flowScratch_.data());
      if (!q.enabled) {
        // A started but disabled transmitq is drained and its frames discarded.
        cfg_.Count(vt, kCDropDisabled, 1);
        continue;
      }
      if (l && l->drop >= 0) continue;
      if (l && l->Holds()) {
        // delay, rate, reorder: a copy leaves later; the chain is completed now, as a NIC
        // completes a frame once it is in its own queue.
        uint32_t len = CopyChainOut(e, fromGuestBounce_.data(), fromGuestBounce_.size());
        if (len == UINT32_MAX) {
          cfg_.Count(vt, kCDropTooBig, 1);
          continue;
        }
        const uint8_t* f = fromGuestBounce_.data();
        if (l->ChangesFrame()) {
          len = LieFrame(*l, f, len);
          f = lieBuf_.data();
        }
        HoldFrame(vt, *l, f, len);
        if (l->duplicate >= 0) {
          HoldFrame(vt, *l, f, len);
          Record(vt, l->duplicate, kFaultDuplicate, kFieldNone, e.head, l->event, 0, 0);
        }
        RecordHeld(vt, *l);
        RecordFrameLies(vt, *l);
        continue;
      }
      if (holdFromGuest_.size()) holdFromGuest_.Passed();
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
    // Frames a batching port queued leave now, before their chains are completed below.
    if (const uint32_t refused = port_->Flush()) cfg_.Count(vt, kCDropHostError, refused);
    if (n > 0) {
      if (filled && filled < burstN_[1]) {
        heldUsed_[1] = filled;  // used-burst: publish when the batch is full
      } else if (filled) {
        fromGuest_.Flush(filled);
        heldUsed_[1] = 0;
        burstN_[1] = 0;
        Notify(fromGuest_, vt, filled);
      }
      progress_ = true;
      cfg_.Count(vt, kCBursts, 1);
      cfg_.Publish(vt, fromGuest_.LastAvailIdx(), fromGuest_.UsedIdx());
      FlushReceiveq();  // loopback frames delivered here
      SignalHandover();
    }
    if (fromGuest_.Broken()) {
      Broken(fromGuest_, vt);
      return;
    }
    if (n == 0) {
      if (polling_) return;  // busy-polling: the thread looks again without a kick
      // Empty: ask for kicks again, then look once more (the driver may have added meanwhile).
      fromGuest_.SetNotification(true);
      kicksOn_[1] = true;
      if (fromGuest_.Empty() || q.kickFd < 0) return;
      fromGuest_.SetNotification(false);
      kicksOn_[1] = false;
    }
  }
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
  if (timerFd_ >= 0) add(timerFd_, kHoldTimer);
  timerArmedNs_ = 0;  // re-armed (or disarmed) by the first pass
  bool polled = false;
  MemoryFaultScope scope(receiveq_);
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
    MemoryFaultScope txScope(transmitq_);
    // VIRTIO_F_IN_ORDER: the transmitq publishes one used element per burst (the device writes
    // nothing into its buffers). Not under a fault plan: its lies are per chain.
    RingConfig c = qt.cfg;
    c.inOrderBatch = cfg_.Has(kFInOrder) && !cfg_.FaultsOf(transmitq_);
    if (!fromGuest_.Attach(cfg_.mem, c, qt.lastAvailIdx, qt.usedIdx))
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
  kicksOn_[0] = kicksOn_[1] = true;
  faultsToGuest_ = cfg_.FaultsOf(receiveq_);
  faultsFromGuest_ = cfg_.FaultsOf(transmitq_);
  faultLogToGuest_ = cfg_.FaultLogOf(receiveq_);
  faultLogFromGuest_ = cfg_.FaultLogOf(transmitq_);
  toGuestLies_.pending = false;
  // Dirty log: on while VHOST_F_LOG_ALL is acked and the front-end gave a log area.
  const LogArea logArea = cfg_.Has(kFLogAll) ? cfg_.log : LogArea{};
  toGuest_.SetLogArea(logArea);
  fromGuest_.SetLogArea(logArea);
  toGuest_.SetTrace(cfg_.TraceOf(receiveq_));
  fromGuest_.SetTrace(cfg_.TraceOf(transmitq_));
  capToGuest_ = cfg_.CaptureOf(receiveq_);
  capFromGuest_ = cfg_.CaptureOf(transmitq_);
  for (int d = 0; d < 2; d++) {
    coalesce_[d].Reset();
    coalesceOn_[d] =
        cfg_.coalesce.mode != kCoalesceOff && !(d == 0 ? faultsToGuest_ : faultsFromGuest_);
  }
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
    case kHoldTimer:
      DrainEventfd(timerFd_);  // a timerfd reads as a u64 count, like an eventfd
      break;
    default:
      break;
  }
}

void QueuePair::Teardown() {
  QueueState& qr = cfg_.queues[receiveq_];
  QueueState& qt = cfg_.queues[transmitq_];
  // used-burst: a stop publishes what waits (the positions handed back must hold it).
  burstN_[0] = burstN_[1] = 0;
  {
    MemoryFaultScope scope(transmitq_);
    if (heldUsed_[1] && qt.started && !qt.broken) fromGuest_.Flush(heldUsed_[1]);
  }
  heldUsed_[1] = 0;
  FlushReceiveq();
  SignalHandover();
  // Coalescing: an interrupt still held goes out now, for the entries already published.
  const int64_t now = MonotonicNs();
  for (int d = 0; d < 2; d++)
    if (coalesce_[d].Stop(now)) SendHeld(d, kCoalesceSentStop);
  if (cached_ > pos_) toGuest_.Rewind(static_cast<uint16_t>(cached_ - pos_));
  // Marks still cached (avail_event, a descriptor rewrite) reach the log before the position
  // is handed back: the front-end's last log sync follows GET_VRING_BASE.
  if (toGuest_.Log().On()) toGuest_.Log().Sync();
  if (fromGuest_.Log().On()) fromGuest_.Log().Sync();
  TakeMemoryFaults();
  cached_ = pos_ = 0;
  if (qr.started) {
    qr.lastAvailIdx = toGuest_.LastAvailIdx();
    qr.usedIdx = toGuest_.UsedIdx();
  }
  if (qt.started) {
    qt.lastAvailIdx = fromGuest_.LastAvailIdx();
    qt.usedIdx = fromGuest_.UsedIdx();
  }
  cfg_.Publish(receiveq_, qr.lastAvailIdx, qr.usedIdx);
  cfg_.Publish(transmitq_, qt.lastAvailIdx, qt.usedIdx);
  epfd_ = -1;
  hostWatched_ = false;
}

}  // namespace vun
