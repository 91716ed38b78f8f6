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

void QueuePair::Signal(uint32_t vring) {
  const int fd = cfg_.queues[vring].callFd;
  if (fd < 0) {
    // No call fd yet (a ring started at SET_VRING_KICK, before SET_VRING_CALL): nothing was
    // sent, so the ring forgets it decided one and the next flush signals. Counted as sent,
    // EVENT_IDX would hold back every later interrupt of a driver that never got this one.
    (vring == receiveq_ ? toGuest_ : fromGuest_).SetSignalled(0, false);
    return;
  }
  Wake(fd);
  cfg_.Count(vring, kCNotifySent, 1);
}

// The end of a transmit burst at the host: what a batching port queued leaves now (before the
// burst's chains are completed: a queued frame may still be read from them); refused frames
// and, for a port that has more than one way to write, how it wrote them and at what cost.
void QueuePair::FlushPort() {
  if (const uint32_t refused = port_->Flush()) cfg_.Count(transmitq_, kCDropHostError, refused);
  const HostPort::WriteCost w = port_->LastWrite();
  if (w.frames) {
    cfg_.Count(transmitq_, w.way ? kCTapUringFrames : kCTapPlainFrames, w.frames);
    cfg_.Count(transmitq_, w.way ? kCTapUringNs : kCTapPlainNs, w.ns);
  }
}

void QueuePair::Notify(Vring& ring, uint32_t vring, uint32_t frames) {
  const int d = vring == receiveq_ ? kToGuest : kFromGuest;
  // The ring decides whether (EVENT_IDX, NO_INTERRUPT); a fault plan or coalescing, when.
  bool send = faults_ ? faults_->Interrupt(d, ring) : ring.NeedNotify();
  if (coalesceOn_[d] && !Coalesce(ring, vring, d, frames, &send)) return;
  if (send)
    Signal(vring);
  else
    cfg_.Count(vring, kCNotifySuppressed, 1);
  // notify-storm: interrupts with nothing new behind them (an eventfd adds up writes the
  // front-end has not read yet).
  const int fd = cfg_.queues[vring].callFd;
  if (faults_)
    for (uint32_t k = faults_->TakeStorm(d); k > 0; k--)
      if (fd >= 0) Wake(fd);
}

bool QueuePair::Coalesce(Vring& ring, uint32_t vring, int d, uint32_t frames, bool* send) {
  // Coalescing: the ring said whether; this says when. Entries flushed while an interrupt is
  // held ride on it, asked for or not.
  Coalescer& c = coalesce_[d];
  VringObserver* trace = ring.Trace();
  const int64_t now = MonotonicNs();
  const int64_t lastNs = c.LastSentNs();
  switch (c.Flushed(cfg_.coalesce, now, frames, *send)) {
    case Coalescer::kNone:
      return true;
    case Coalescer::kSend:
      if (trace) {
        const bool early = c.LastReason() == Coalescer::kFrames;
        trace->Coalesce(early ? kCoalesceSentFrames : kCoalesceSentIdle, cfg_.coalesce.mode,
                        c.SentFrames(), early ? 0 : static_cast<uint64_t>(now - lastNs) / 1000);
      }
      *send = true;
      return true;
    case Coalescer::kHold:
      if (trace)
        trace->Coalesce(kCoalesceHeld, cfg_.coalesce.mode, c.OwedFrames(),
                        static_cast<uint64_t>(c.DueNs() - now) / 1000);
      cfg_.Count(vring, kCNotifyCoalesced, 1);
      return false;
    case Coalescer::kJoin:
      if (trace) trace->Coalesce(kCoalesceJoined, cfg_.coalesce.mode, c.OwedFrames(), 0);
      cfg_.Count(vring, kCNotifyCoalesced, 1);
      return false;
    case Coalescer::kWait:
      cfg_.Count(vring, kCNotifySuppressed, 1);
      return false;
  }
  return true;
}

void QueuePair::SendHeld(int d, CoalesceAction why) {
  Signal(d == kToGuest ? receiveq_ : transmitq_);
  VringObserver* trace = (d == kToGuest ? toGuest_ : fromGuest_).Trace();
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

// transmitq: pop chains, fill each used (len 0: the device wrote nothing into them), hand each
// frame to the host, then one flush and one notification decision per burst.
void QueuePair::ProcessTransmitq() {
  const uint32_t vt = transmitq_;
  QueueState& q = cfg_.queues[vt];
  if (!q.started || q.broken) return;
  MemoryFaultScope scope(vt);
  if (kicksOn_[1]) {
    fromGuest_.SetNotification(false);  // working: no kicks until the ring runs empty
    kicksOn_[1] = false;
  }
  for (uint32_t bursts = 0;; bursts++) {
    if (bursts == kTransmitBursts) {
      more_ = true;  // yield (notifications stay off): the thread comes back at once
      return;
    }
    const uint32_t n = fromGuest_.PopBurst(fromGuestElems_, kMaxBurst, fromGuestSegs_.data());
    // used-burst: entries written in an earlier burst and not published yet.
    uint16_t filled = faults_ ? faults_->Waiting(kFromGuest) : 0;
    for (uint32_t i = 0; i < n; i++) {
      const Element& e = fromGuestElems_[i];
      // With a fault plan, each chain popped is an event, and its used element may be a lie.
      Lies* l = faults_ ? faults_->ChainPopped(e.head) : nullptr;
      if (!l) {
        fromGuest_.Fill(e.head, 0, filled++, e.slots);
      } else {
        const PairFaults::UsedLie u = faults_->Used(kFromGuest, *l, fromGuest_, e.head, 0);
        for (uint32_t k = 0; k < u.count; k++) {
          fromGuest_.Fill(u.id, u.len, filled, e.slots);
          if (u.wrongWrap) fromGuest_.FlipWrap(filled);
          filled++;
        }
      }
      SendChain(e, l);
    }
    // Frames a batching port queued leave now, before their chains are completed below.
    FlushPort();
    if (n > 0) {
      if (filled && (!faults_ || faults_->Publish(kFromGuest, filled))) {
        fromGuest_.Flush(filled);
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

// One transmitq chain's frame to the host port (or, loopback, back to a receiveq). Inlined
// into the transmitq's loop: a call per chain measured 1.6% more CPU per frame at 64 B.
__attribute__((always_inline)) inline void QueuePair::SendChain(const Element& e, Lies* l) {
  const uint32_t vt = transmitq_;
  const uint32_t hdr = cfg_.hdrLen;
  const QueueState& q = cfg_.queues[vt];
  if (e.outLen < hdr) {
    cfg_.Count(vt, kCDropMalformed, 1);
    return;
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
    return;
  }
  PairFaults::Frame f;
  if (faults_) {
    // A fault plan's hook: the frame may be dropped, held, changed or sent twice.
    f = faults_->Leaving(l, e);
    if (!f.go) return;
  }
  uint32_t sent = 0;
  for (; sent < f.copies; sent++) {
    uint32_t looped = 0;
    const HostPort::Sent s =
        f.data ? port_->SendFrame(f.data, f.len, fromGuestBounce_.data(), fromGuestBounce_.size(),
                                  &looped)
               : port_->Send(e, hdr, fromGuestBounce_.data(), fromGuestBounce_.size(), &looped);
    if (!CountSent(s, looped, e.outLen - hdr)) break;
  }
  if (l) faults_->Left(*l, e.head, sent);
}

// Counts a frame handed to the host port; a looped one goes back to the guest, on this pair's
// receiveq or where steering says. False when the port refused it.
__attribute__((always_inline)) inline bool QueuePair::CountSent(HostPort::Sent sent,
                                                                uint32_t looped, uint32_t bytes) {
  const uint32_t vt = transmitq_;
  if (sent == HostPort::Sent::kFailed) {
    cfg_.Count(vt, kCDropHostError, 1);
    return false;
  }
  if (sent == HostPort::Sent::kTooBig) {
    cfg_.Count(vt, kCDropTooBig, 1);
    return false;
  }
  if (sent == HostPort::Sent::kLooped && Route(fromGuestBounce_.data(), looped) == 0)
    cfg_.Count(receiveq_, kCDropNoBuffers, 1);
  cfg_.Count(vt, kCFrames, 1);
  cfg_.Count(vt, kCBytes, bytes);
  return true;
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
  // The fault room: made for a plan with rules for this pair, kept while it still holds
  // frames or interrupts of an earlier plan.
  const bool rules = cfg_.FaultsOf(receiveq_) || cfg_.FaultsOf(transmitq_);
  if (rules && !faults_) faults_.reset(new PairFaults(cfg_, pair_));
  if (faults_) faults_->Attach();
  if (faults_ && faults_->Idle()) faults_.reset();
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
    coalesceOn_[d] = cfg_.coalesce.mode != kCoalesceOff &&
                     !cfg_.FaultsOf(d == kToGuest ? receiveq_ : transmitq_);
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
  if (faults_) {
    faults_->Stop(kToGuest);
    const uint16_t waiting = faults_->Stop(kFromGuest);
    MemoryFaultScope scope(transmitq_);
    if (waiting && qt.started && !qt.broken) fromGuest_.Flush(waiting);
  }
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

void QueuePair::ReleaseFromGuest(const uint8_t* frame, uint32_t len) {
  uint32_t looped = 0;
  const HostPort::Sent sent =
      port_->SendFrame(frame, len, fromGuestBounce_.data(), fromGuestBounce_.size(), &looped);
  CountSent(sent, looped, len > cfg_.hdrLen ? len - cfg_.hdrLen : 0);
}

void QueuePair::ReleaseHeld() {
  const int64_t now = MonotonicNs();
  if (faults_) {
    // The fault room's frames (delay, rate, reorder) and interrupts (notify-delay) that are
    // due. A frame the guest has no buffer for yet stays; the receiveq kick brings us back.
    const QueueState& qr = cfg_.queues[receiveq_];
    const bool live[2] = {qr.started && !qr.broken, cfg_.queues[transmitq_].started};
    bool sent = false;
    faults_->ReleaseDue(
        now, live,
        [this](const uint8_t* f, uint32_t len) {
          progress_ = true;
          again_ = true;  // its lies were told when it was held
          const int r = Deliver(f, len);
          again_ = false;
          return r != 0;
        },
        [this, &sent](const uint8_t* f, uint32_t len) {
          progress_ = sent = true;
          ReleaseFromGuest(f, len);
        },
        [this](int d) { Signal(d == kToGuest ? receiveq_ : transmitq_); },
        [this](int d, uint16_t n) {
          // used-burst's holdMs ran out: the batch goes as it is.
          progress_ = true;
          if (d == kToGuest) return FlushReceiveq();  // its count is filled_, its batch cleared
          if (!n || cfg_.queues[transmitq_].broken) return;
          MemoryFaultScope scope(transmitq_);
          fromGuest_.Flush(n);
          Notify(fromGuest_, transmitq_, n);
          cfg_.Publish(transmitq_, fromGuest_.LastAvailIdx(), fromGuest_.UsedIdx());
        });
    if (sent) FlushPort();
  }
  FlushReceiveq();
  SignalHandover();
  // Coalescing: held interrupts that are due.
  for (int d = 0; d < 2; d++)
    if (coalesce_[d].Due(now)) SendHeld(d, kCoalesceSentDue);
  // The timer follows the earliest release (absolute CLOCK_MONOTONIC; 0 disarms).
  int64_t next = faults_ ? faults_->NextNs() : FrameHold::kNever;
  next = std::min(next, std::min(coalesce_[0].DueNs(), coalesce_[1].DueNs()));
  if (next == timerArmedNs_ || timerFd_ < 0) return;
  itimerspec t{};
  if (next != FrameHold::kNever) {
    if (next <= now) next = now + 1000000;  // due but blocked: look again in 1 ms
    t.it_value.tv_sec = next / 1000000000;
    t.it_value.tv_nsec = next % 1000000000;
  }
  timerfd_settime(timerFd_, TFD_TIMER_ABSTIME, &t, nullptr);
  timerArmedNs_ = next;
}

}  // namespace vun
