#include "net_device.h"

#include <linux/if_tun.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "env_state.h"
#include "errors.h"

namespace vun {
namespace {

// epoll tags: (pair << 8) | kind, and one for a thread's stop eventfd.
constexpr uint32_t kTagRxKick = 1, kTagTxKick = 2, kTagHost = 3, kTagHandover = 4;
constexpr uint64_t kTagStopThread = ~uint64_t(0);
constexpr uint32_t kBounceSize = 65536 + 12 + 16;  // a 64 KiB GSO frame and its header
constexpr uint16_t kFlushEvery = 32;

void DrainEventfd(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof(v)) == sizeof(v)) {
  }
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

// ---------------------------------------------------------------------------------------------
// PairWorker

PairWorker::PairWorker(NetDevice* dev, uint32_t pair)
    : dev_(dev),
      pair_(pair),
      bounce_(kBounceSize),
      rxSegs_(kBurstSegs),
      flowScratch_(128),
      txSegs_(kBurstSegs),
      txBounce_(kBounceSize) {}

bool PairWorker::Active() const {
  return dev_->queues[2 * pair_].started || dev_->queues[2 * pair_ + 1].started;
}

void WorkerThread::Start() {
  if (thread_.joinable()) return;
  stopFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  // Workers take no signals: Node's main thread handles them.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { Run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (!dev_->cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(dev_->cpus[index_ % dev_->cpus.size()], &set);
    pthread_setaffinity_np(thread_.native_handle(), sizeof(set), &set);
  }
}

void WorkerThread::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  ssize_t w = write(stopFd_, &one, sizeof(one));
  (void)w;
  thread_.join();
  close(stopFd_);
  stopFd_ = -1;
}

void WorkerThread::Run() {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event sev{};
  sev.events = EPOLLIN;
  sev.data.u64 = kTagStopThread;
  epoll_ctl(epfd, EPOLL_CTL_ADD, stopFd_, &sev);
  std::vector<PairWorker*> active;
  bool polled = false;
  for (PairWorker* p : pairs) {
    if (!p->Active()) continue;
    polled |= p->Setup(epfd);
    active.push_back(p);
  }
  epoll_event evs[16];
  auto lastProgress = std::chrono::steady_clock::now();
  const auto spin = std::chrono::microseconds(dev_->pollUs);
  for (bool stop = false; !stop;) {
    bool progress = false;
    for (PairWorker* p : active) progress |= p->Work();
    // A polled ring (no kick fd) is looked at every millisecond; otherwise sleep until an fd,
    // unless busy-polling: then keep looking (timeout 0) until `pollUs` pass without a frame.
    int timeout = polled ? 1 : -1;
    if (dev_->pollUs) {
      auto now = std::chrono::steady_clock::now();
      if (progress) lastProgress = now;
      if (now - lastProgress < spin) timeout = 0;
    }
    int n = epoll_wait(epfd, evs, 16, timeout);
    for (int i = 0; i < n; i++) {
      uint64_t tag = evs[i].data.u64;
      if (tag == kTagStopThread) {
        stop = true;
        continue;
      }
      dev_->workers_[tag >> 8]->OnEvent(static_cast<uint32_t>(tag & 0xff));
    }
  }
  for (PairWorker* p : active) p->Teardown();
  close(epfd);
}

void PairWorker::Count(uint32_t vring, CounterSlot slot, uint64_t n) {
  // Relaxed atomic add: a worker may count on another pair's vring (handover drops); JS reads
  // whole values and needs no ordering with anything else.
  __atomic_fetch_add(dev_->CounterBase(vring) + slot, n, __ATOMIC_RELAXED);
}

void PairWorker::Broken(SplitRing& ring, QueueState& q, uint32_t vring) {
  q.broken = true;
  q.error = ring.error;
  Count(vring, kCRingError, 1);
  // Logged once, by JS: the session reports it with the queue and the error name.
  struct Ev {
    uint32_t vring, error;
  };
  auto* ev = new Ev{vring, ring.error};
  napi_status s = dev_->events.NonBlockingCall(ev, [](Napi::Env env, Napi::Function fn, Ev* e) {
    if (env != nullptr && fn != nullptr) {
      fn.Call({Napi::Number::New(env, e->vring), Napi::Number::New(env, e->error),
               Napi::String::New(env, RingErrorName(e->error))});
    }
    delete e;
  });
  if (s != napi_ok) delete ev;
}

void PairWorker::Notify(SplitRing& ring, QueueState& q, uint32_t vring) {
  if (ring.NeedNotify()) {
    if (q.callFd >= 0) {
      uint64_t one = 1;
      ssize_t w = write(q.callFd, &one, sizeof(one));
      (void)w;
    }
    Count(vring, kCNotifySent, 1);
  } else {
    Count(vring, kCNotifySuppressed, 1);
  }
}

void PairWorker::WatchHost(bool on) {
  if (hostFd_ < 0 || epfd_ < 0 || hostWatched_ == on) return;
  epoll_event ev{};
  ev.events = on ? static_cast<uint32_t>(EPOLLIN) : 0u;
  ev.data.u64 = Tag(kTagHost);
  epoll_ctl(epfd_, EPOLL_CTL_MOD, hostFd_, &ev);
  hostWatched_ = on;
}

uint32_t PairWorker::CopyChainOut(const Element& e, uint8_t* dst, uint32_t cap) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < e.outNum; i++) {
    uint32_t len = e.segs[i].len;
    if (len > cap - n) return UINT32_MAX;
    std::memcpy(dst + n, e.segs[i].host, len);
    n += len;
  }
  return n;
}

// transmitq: pop chains, hand each frame to the host, give the chains back used (len 0: the
// device wrote nothing into them), one flush and one notification decision per burst.
void PairWorker::ProcessTx() {
  uint32_t vt = 2 * pair_ + 1;
  QueueState& q = dev_->queues[vt];
  if (!q.started || q.broken) return;
  const uint32_t hdr = dev_->hdrLen;
  for (;;) {
    uint32_t n = tx_.PopBurst(txElems_, kMaxBurst, txSegs_.data());
    for (uint32_t i = 0; i < n; i++) {
      const Element& e = txElems_[i];
      tx_.Fill(e.head, 0, static_cast<uint16_t>(i));
      if (e.outLen < hdr) {
        Count(vt, kCDropMalformed, 1);
        continue;
      }
      uint64_t frameLen = e.outLen - hdr;
      if (capTx_) capTx_->Frame(1, hdr, e.outLen, e.segs, e.outNum);
      if (dev_->policy == SteerPolicy::kFlowAffinity) RecordFlow(e);
      if (!q.enabled) {
        // A started but disabled transmitq is drained and its frames discarded.
        Count(vt, kCDropDisabled, 1);
        continue;
      }
      bool ok = true;
      switch (dev_->host) {
        case HostKind::kNull:
          break;
        case HostKind::kTap: {
          // The virtio-net header passes straight through: the TAP's vnet header size is ours.
          iovec iov[64];
          if (e.outNum <= 64) {
            for (uint32_t k = 0; k < e.outNum; k++) iov[k] = iovec{e.segs[k].host, e.segs[k].len};
            ok = writev(hostFd_, iov, static_cast<int>(e.outNum)) >= 0;
          } else {
            uint32_t len = CopyChainOut(e, txBounce_.data(), kBounceSize);
            ok = len != UINT32_MAX && write(hostFd_, txBounce_.data(), len) >= 0;
          }
          break;
        }
        case HostKind::kAfPacket: {
          // PACKET_VNET_HDR takes the 10-byte header: drop num_buffers (bytes 10-11).
          uint32_t len = CopyChainOut(e, txBounce_.data(), kBounceSize);
          if (len == UINT32_MAX || len < 12) {
            ok = false;
            break;
          }
          iovec iov[2] = {{txBounce_.data(), 10}, {txBounce_.data() + 12, len - 12}};
          msghdr m{};
          m.msg_iov = iov;
          m.msg_iovlen = 2;
          ok = sendmsg(hostFd_, &m, MSG_DONTWAIT) >= 0;
          break;
        }
        case HostKind::kLoopback: {
          uint32_t len = CopyChainOut(e, bounce_.data(), kBounceSize);
          if (len == UINT32_MAX) {
            Count(vt, kCDropTooBig, 1);
            continue;
          }
          // The frame comes back to the guest: on this pair's receiveq, or where steering says.
          if (Route(bounce_.data(), len) == 0) Count(2 * pair_, kCDropNoBuffers, 1);
          break;
        }
      }
      if (!ok) {
        Count(vt, kCDropHostError, 1);
        continue;
      }
      Count(vt, kCFrames, 1);
      Count(vt, kCBytes, frameLen);
    }
    if (n > 0) {
      tx_.Flush(static_cast<uint16_t>(n));
      progress_ = true;
      Count(vt, kCBursts, 1);
      __atomic_store_n(dev_->CounterBase(vt) + kCLastAvailIdx, tx_.lastAvailIdx, __ATOMIC_RELAXED);
      __atomic_store_n(dev_->CounterBase(vt) + kCUsedIdx, tx_.usedIdx, __ATOMIC_RELAXED);
      Notify(tx_, q, vt);
    }
    if (dev_->host == HostKind::kLoopback) {
      FlushRx();
      SignalHandover();
    }
    if (tx_.broken) {
      Broken(tx_, q, vt);
      return;
    }
    if (n == 0) {
      // Empty: ask for kicks again, then look once more (the driver may have added meanwhile).
      tx_.SetNotification(true);
      if (tx_.Empty() || q.kickFd < 0) return;
      tx_.SetNotification(false);
    }
  }
}

// Reads one frame from the host into bounce_ as [header][frame]. False when none is waiting.
bool PairWorker::ReadHostFrame() {
  const uint32_t hdr = dev_->hdrLen;
  switch (dev_->host) {
    case HostKind::kTap: {
      ssize_t n = read(hostFd_, bounce_.data(), kBounceSize);
      if (n < 0) return false;
      if (n < static_cast<ssize_t>(hdr)) return ReadHostFrame();
      pendingLen_ = static_cast<uint32_t>(n);
      return true;
    }
    case HostKind::kAfPacket: {
      // PACKET_VNET_HDR delivers a 10-byte header: read it 2 bytes in, then move it down so
      // num_buffers (bytes 10-11) is ours to fill.
      ssize_t n = recv(hostFd_, bounce_.data() + 2, kBounceSize - 2, MSG_DONTWAIT);
      if (n < 10) return false;
      std::memmove(bounce_.data(), bounce_.data() + 2, 10);
      pendingLen_ = static_cast<uint32_t>(n + 2);
      return true;
    }
    case HostKind::kNull: {
      if (dev_->sourceLen == 0) return false;
      // null:source=LEN: a broadcast frame of LEN bytes, ethertype 0x88b5 (local experimental).
      std::memset(bounce_.data(), 0, hdr);
      uint8_t* f = bounce_.data() + hdr;
      std::memset(f, 0xff, 6);
      const uint8_t src[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
      std::memcpy(f + 6, src, 6);
      f[12] = 0x88;
      f[13] = 0xb5;
      pendingLen_ = hdr + dev_->sourceLen;
      return true;
    }
    default:
      return false;
  }
}

// Places a frame ([header][frame]) into receiveq chains. 1: delivered or dropped for good; 0:
// not enough guest buffers (the caller keeps the frame); -1: ring broken.
int PairWorker::Deliver(const uint8_t* frame, uint32_t len) {
  uint32_t vr = 2 * pair_;
  QueueState& q = dev_->queues[vr];
  const uint32_t hdr = dev_->hdrLen;
  const bool mrg = dev_->Has(kFMrgRxbuf);
  if (!q.started || q.broken) return 0;
  if (!q.enabled) {
    // A disabled receiveq gets nothing.
    Count(vr, kCDropDisabled, 1);
    return 1;
  }
  // The host may hand us what the guest cannot take (AF_PACKET ignores the guest's offloads):
  // a partial checksum needs GUEST_CSUM, a GSO frame the matching GUEST_TSO/UFO feature.
  const uint8_t flags = frame[0], gso = frame[1] & 0x7f;
  if (((flags & 1) && !dev_->Has(kFGuestCsum)) || (gso == 1 && !dev_->Has(kFGuestTso4)) ||
      (gso == 4 && !dev_->Has(kFGuestTso6)) || (gso == 3 && !dev_->Has(kFGuestUfo)) ||
      (gso != 0 && gso != 1 && gso != 3 && gso != 4)) {
    Count(vr, kCDropMalformed, 1);
    return 1;
  }
  uint8_t* nb[2] = {nullptr, nullptr};  // where num_buffers lives in the first chain
  uint16_t taken = 0;
  uint32_t copied = 0;
  while (copied < len || taken == 0) {
    if (rxPos_ == rxCached_) {
      rxPos_ = rxCached_ = 0;
      rxCached_ = rx_.PopBurst(rxElems_, kMaxBurst, rxSegs_.data());
      if (rx_.broken) {
        Broken(rx_, q, vr);
        return -1;
      }
      if (rxCached_ == 0) {
        // Out of buffers: un-take this frame's chains (they are the last popped).
        rx_.Rewind(taken);
        rxFilled_ -= taken;
        return 0;
      }
    }
    const Element& e = rxElems_[rxPos_++];
    if (!mrg && e.inLen < len) {
      // Without MRG_RXBUF one chain must hold the whole frame: drop it, keep the chain.
      rxPos_--;
      Count(vr, kCDropTooBig, 1);
      return 1;
    }
    if (taken == 0) {
      if (e.inLen < hdr) {
        rxPos_--;
        Count(vr, kCDropTooBig, 1);
        return 1;
      }
      // Where num_buffers (header bytes 10-11) lands: filled in once the chains are counted.
      nb[0] = ByteAt(e, 10);
      nb[1] = ByteAt(e, 11);
    }
    uint32_t n = ScatterIn(e, 0, frame + copied, len - copied);
    copied += n;
    rx_.Fill(e.head, n, rxFilled_++);
    taken++;
  }
  // num_buffers: how many chains hold this frame (1 without MRG_RXBUF), little-endian.
  if (hdr == 12) {
    if (nb[0]) *nb[0] = static_cast<uint8_t>(taken & 0xff);
    if (nb[1]) *nb[1] = static_cast<uint8_t>(taken >> 8);
  }
  if (capRx_) {
    // The header as the guest reads it, num_buffers included.
    uint8_t h[12];
    std::memcpy(h, frame, hdr);
    if (hdr == 12) {
      h[10] = static_cast<uint8_t>(taken & 0xff);
      h[11] = static_cast<uint8_t>(taken >> 8);
    }
    struct Part {
      const uint8_t* host;
      uint32_t len;
    } part{frame, len};
    capRx_->Frame(0, hdr, len, &part, 1, h);
  }
  rxFrames_++;
  rxBytes_ += len - hdr;
  progress_ = true;
  if (rxFilled_ >= kFlushEvery) FlushRx();
  return 1;
}

void PairWorker::FlushRx() {
  if (rxFilled_ == 0) return;
  uint32_t vr = 2 * pair_;
  rx_.Flush(rxFilled_);
  rxFilled_ = 0;
  __atomic_store_n(dev_->CounterBase(vr) + kCLastAvailIdx, rx_.lastAvailIdx, __ATOMIC_RELAXED);
  __atomic_store_n(dev_->CounterBase(vr) + kCUsedIdx, rx_.usedIdx, __ATOMIC_RELAXED);
  Count(vr, kCFrames, rxFrames_);
  Count(vr, kCBytes, rxBytes_);
  Count(vr, kCBursts, 1);
  rxFrames_ = rxBytes_ = 0;
  Notify(rx_, dev_->queues[vr], vr);
}

// The receiveq the steering policy picks for a frame of this pair (this pair when there is no
// policy, the frame is not IP, or the target's receiveq is not started and enabled).
uint32_t PairWorker::SteerTarget(const uint8_t* frame, uint32_t len) {
  if (dev_->policy == SteerPolicy::kNone || dev_->pairs == 1) return pair_;
  const uint32_t hdr = dev_->hdrLen;
  if (len <= hdr) return pair_;
  uint8_t in[36];
  HashType t;
  size_t n = FlowInput(frame + hdr, len - hdr, in, &t);
  if (n == 0) return pair_;
  uint32_t h = Toeplitz(dev_->rss.key, sizeof(dev_->rss.key), in, n);
  uint32_t target = dev_->rss.table[h % dev_->rss.tableSize];
  if (dev_->policy == SteerPolicy::kFlowAffinity) {
    // virtio 1.2 §5.1.6.5.5: a flow's frames go to the receiveq of the transmitq it last used.
    uint64_t e = dev_->flows[h % NetDevice::kFlowSlots].load(std::memory_order_relaxed);
    if ((e >> 32) == h) target = static_cast<uint32_t>(e & 0xffff);
  }
  if (target >= dev_->pairs || !((dev_->rxReady.load(std::memory_order_relaxed) >> target) & 1))
    return pair_;
  return target;
}

// Flow affinity: remember that this flow was last sent on this pair, under the hash its
// replies will have.
void PairWorker::RecordFlow(const Element& e) {
  uint8_t* s = flowScratch_.data();
  uint32_t n = 0;
  for (uint32_t i = 0; i < e.outNum && n < flowScratch_.size(); i++) {
    uint32_t take =
        std::min<uint32_t>(e.segs[i].len, static_cast<uint32_t>(flowScratch_.size()) - n);
    std::memcpy(s + n, e.segs[i].host, take);
    n += take;
  }
  const uint32_t hdr = dev_->hdrLen;
  if (n <= hdr) return;
  uint8_t in[36];
  HashType t;
  size_t len = FlowInput(s + hdr, n - hdr, in, &t);
  if (len == 0) return;
  ReverseFlowInput(in, len);
  uint32_t h = Toeplitz(dev_->rss.key, sizeof(dev_->rss.key), in, len);
  dev_->flows[h % NetDevice::kFlowSlots].store((uint64_t(h) << 32) | pair_,
                                               std::memory_order_relaxed);
}

int PairWorker::Route(const uint8_t* frame, uint32_t len) {
  uint32_t target = SteerTarget(frame, len);
  if (target == pair_) return Deliver(frame, len);
  HandoverRing* ring = dev_->RingForProducer(pair_, target);
  if (!ring) return Deliver(frame, len);
  if (!ring->Push(frame, len)) {
    Count(2 * target, kCDropNoBuffers, 1);  // the target is not keeping up
    return 1;
  }
  dirtyTargets_ |= uint64_t(1) << target;
  Count(2 * pair_, kCHandover, 1);
  return 1;
}

void PairWorker::SignalHandover() {
  for (uint32_t t = 0; dirtyTargets_ != 0; t++, dirtyTargets_ >>= 1) {
    if (dirtyTargets_ & 1) {
      uint64_t one = 1;
      ssize_t w = write(dev_->handoverFd[t], &one, sizeof(one));
      (void)w;
    }
  }
}

// Frames other pairs handed to this receiveq. False when the guest ran out of buffers.
bool PairWorker::DrainHandover() {
  for (uint32_t src = 0; src < dev_->pairs; src++) {
    HandoverRing* ring = src == pair_ ? nullptr : dev_->Ring(src, pair_);
    if (!ring) continue;
    if (!ring->Drain([this](const uint8_t* f, uint32_t len) { return Deliver(f, len) > 0; }))
      return false;
  }
  return true;
}

// receiveq: frames handed over by other pairs, then frames from the host, into guest buffers
// until there are none or the guest has no buffers left; then wait for one or the other.
void PairWorker::ProcessRx() {
  uint32_t vr = 2 * pair_;
  QueueState& q = dev_->queues[vr];
  if (!q.started || q.broken) return;
  const bool hostFrames = dev_->host == HostKind::kTap || dev_->host == HostKind::kAfPacket ||
                          (dev_->host == HostKind::kNull && dev_->sourceLen > 0);
  for (;;) {
    bool blocked = !DrainHandover();
    while (!blocked && hostFrames && (hostFd_ >= 0 || dev_->host == HostKind::kNull)) {
      if (pendingLen_ == 0 && !ReadHostFrame()) break;
      int r = Route(bounce_.data(), pendingLen_);
      if (r < 0) return;
      if (r == 0)
        blocked = true;
      else
        pendingLen_ = 0;
    }
    FlushRx();
    SignalHandover();
    if (q.broken || rx_.broken) return;
    if (!blocked) break;
    // No guest buffers: stop reading the host, ask for a kick, and look once more.
    WatchHost(false);
    rx_.SetNotification(true);
    if (rx_.Empty()) return;
  }
  // Give back chains popped for frames that did not come.
  if (rxCached_ > rxPos_) {
    rx_.Rewind(static_cast<uint16_t>(rxCached_ - rxPos_));
    __atomic_store_n(dev_->CounterBase(vr) + kCLastAvailIdx, rx_.lastAvailIdx, __ATOMIC_RELAXED);
  }
  rxCached_ = rxPos_ = 0;
  WatchHost(true);
}

bool PairWorker::Setup(int epfd) {
  uint32_t vr = 2 * pair_, vt = vr + 1;
  QueueState& qr = dev_->queues[vr];
  QueueState& qt = dev_->queues[vt];
  epfd_ = epfd;
  auto add = [this](int fd, uint32_t kind) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = Tag(kind);
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  };
  add(dev_->handoverFd[pair_], kTagHandover);
  bool polled = false;
  if (qr.started && !qr.broken) {
    if (!rx_.Attach(dev_->mem, qr.cfg, qr.lastAvailIdx, qr.usedIdx)) Broken(rx_, qr, vr);
    if (qr.kickFd >= 0)
      add(qr.kickFd, kTagRxKick);
    else
      polled = true;
  }
  if (qt.started && !qt.broken) {
    if (!tx_.Attach(dev_->mem, qt.cfg, qt.lastAvailIdx, qt.usedIdx)) Broken(tx_, qt, vt);
    if (qt.kickFd >= 0)
      add(qt.kickFd, kTagTxKick);
    else
      polled = true;
  }
  hostFd_ = pair_ < dev_->hostFds.size() ? dev_->hostFds[pair_] : -1;
  hostWatched_ = false;
  if (hostFd_ >= 0 && qr.started) {
    add(hostFd_, kTagHost);
    hostWatched_ = true;
  }
  rxCached_ = rxPos_ = 0;
  rxFilled_ = 0;
  rx_.trace = dev_->TraceOf(vr);
  tx_.trace = dev_->TraceOf(vt);
  capRx_ = dev_->CaptureOf(vr);
  capTx_ = dev_->CaptureOf(vt);
  return polled;
}

void PairWorker::OnEvent(uint32_t kind) {
  uint32_t vr = 2 * pair_, vt = vr + 1;
  switch (kind) {
    case kTagRxKick:
      DrainEventfd(dev_->queues[vr].kickFd);
      Count(vr, kCKicks, 1);
      WatchHost(true);
      break;
    case kTagTxKick:
      DrainEventfd(dev_->queues[vt].kickFd);
      Count(vt, kCKicks, 1);
      break;
    case kTagHandover:
      DrainEventfd(dev_->handoverFd[pair_]);
      break;
    default:
      break;
  }
}

void PairWorker::Teardown() {
  uint32_t vr = 2 * pair_, vt = vr + 1;
  QueueState& qr = dev_->queues[vr];
  QueueState& qt = dev_->queues[vt];
  FlushRx();
  SignalHandover();
  if (rxCached_ > rxPos_) rx_.Rewind(static_cast<uint16_t>(rxCached_ - rxPos_));
  rxCached_ = rxPos_ = 0;
  if (qr.started) {
    qr.lastAvailIdx = rx_.lastAvailIdx;
    qr.usedIdx = rx_.usedIdx;
  }
  if (qt.started) {
    qt.lastAvailIdx = tx_.lastAvailIdx;
    qt.usedIdx = tx_.usedIdx;
  }
  *(dev_->CounterBase(vr) + kCLastAvailIdx) = qr.lastAvailIdx;
  *(dev_->CounterBase(vr) + kCUsedIdx) = qr.usedIdx;
  *(dev_->CounterBase(vt) + kCLastAvailIdx) = qt.lastAvailIdx;
  *(dev_->CounterBase(vt) + kCUsedIdx) = qt.usedIdx;
  epfd_ = -1;
  hostWatched_ = false;
}

// ---------------------------------------------------------------------------------------------
// NetDevice (JS surface; every call is control plane)

Napi::Function NetDevice::Init(Napi::Env env) {
  return DefineClass(env, "NetDevice",
                     {
                         InstanceMethod<&NetDevice::SetMemory>("setMemory"),
                         InstanceMethod<&NetDevice::SetFeatures>("setFeatures"),
                         InstanceMethod<&NetDevice::SetHost>("setHost"),
                         InstanceMethod<&NetDevice::SetSteering>("setSteering"),
                         InstanceMethod<&NetDevice::SetCpus>("setCpus"),
                         InstanceMethod<&NetDevice::SetThreads>("setThreads"),
                         InstanceMethod<&NetDevice::SetPoll>("setPoll"),
                         InstanceMethod<&NetDevice::SetObserve>("setObserve"),
                         InstanceMethod<&NetDevice::DrainObserve>("drainObserve"),
                         InstanceMethod<&NetDevice::ObserveLost>("observeLost"),
                         InstanceMethod<&NetDevice::StartQueue>("startQueue"),
                         InstanceMethod<&NetDevice::StopQueue>("stopQueue"),
                         InstanceMethod<&NetDevice::SetEnabled>("setEnabled"),
                         InstanceMethod<&NetDevice::SetCall>("setCall"),
                         InstanceMethod<&NetDevice::Pause>("pause"),
                         InstanceMethod<&NetDevice::Resume>("resume"),
                         InstanceMethod<&NetDevice::Close>("close"),
                     });
}

// new NetDevice(queuePairs, counters: BigUint64Array over a SharedArrayBuffer, onBroken)
NetDevice::NetDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NetDevice>(info) {
  Napi::Env env = info.Env();
  uint32_t pairs = info[0].As<Napi::Number>().Uint32Value();
  if (pairs == 0 || pairs > 128 || !info[1].IsTypedArray() || !info[2].IsFunction()) {
    ThrowArg(env, "NetDevice(queuePairs, counters, onBroken)");
    return;
  }
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  napi_get_typedarray_info(env, ta, &type, &length, &data, &ab, &offset);
  if (type != napi_biguint64_array || length < size_t(pairs) * 2 * kCountersPerVring) {
    ThrowArg(env, "counters must be a BigUint64Array of queuePairs*2*16 slots");
    return;
  }
  counters = static_cast<uint64_t*>(data);
  countersRef_ = Napi::Persistent(info[1]);
  queues.resize(size_t(pairs) * 2);
  this->pairs = pairs;
  flows.reset(new std::atomic<uint64_t>[kFlowSlots]);
  for (uint32_t i = 0; i < kFlowSlots; i++) flows[i].store(0, std::memory_order_relaxed);
  for (uint32_t p = 0; p < pairs; p++) handoverFd.push_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  for (uint32_t p = 0; p < pairs; p++) workers_.emplace_back(new PairWorker(this, p));
  std::vector<uint32_t> identity(pairs);
  for (uint32_t p = 0; p < pairs; p++) identity[p] = p;
  BuildThreads(identity);
  GetState(env)->devices.insert(this);
  env_ = env;
  events = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(),
                                         "vhost-user-net:ring-events", 0, 1);
  events.Unref(env);
}

NetDevice::~NetDevice() {
  Shutdown();
  EnvState* st = GetState(Napi::Env(env_));
  if (st) st->devices.erase(this);
}

void NetDevice::Shutdown() {
  if (closed_) return;
  StopAll();
  closed_ = true;
  events.Release();
  for (int fd : handoverFd) close(fd);
  handoverFd.clear();
  if (handover) {
    for (size_t i = 0; i < size_t(pairs) * pairs; i++)
      delete handover[i].load(std::memory_order_relaxed);
    handover.reset();
  }
}

void NetDevice::UpdateRxReady(uint32_t pair) {
  const QueueState& q = queues[2 * pair];
  uint64_t bit = uint64_t(1) << pair;
  if (q.started && q.enabled)
    rxReady.fetch_or(bit, std::memory_order_relaxed);
  else
    rxReady.fetch_and(~bit, std::memory_order_relaxed);
}

// setPoll(us): busy-poll this many microseconds after the last frame before sleeping.
Napi::Value NetDevice::SetPoll(const Napi::CallbackInfo& info) {
  StopAll();
  pollUs = info[0].As<Napi::Number>().Uint32Value();
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return info.Env().Undefined();
}

// setCpus(cpus: number[]): pin thread t to cpus[t % length] (empty: no pinning).
Napi::Value NetDevice::SetCpus(const Napi::CallbackInfo& info) {
  Napi::Array arr = info[0].As<Napi::Array>();
  StopAll();
  cpus.clear();
  for (uint32_t i = 0; i < arr.Length(); i++)
    cpus.push_back(arr.Get(i).As<Napi::Number>().Int32Value());
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return info.Env().Undefined();
}

// setSteering(policy: 0 none | 1 toeplitz | 2 flow-affinity, key: Buffer(40), table: number[])
Napi::Value NetDevice::SetSteering(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t policyCode = info[0].As<Napi::Number>().Uint32Value();
  auto key = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Array table = info[2].As<Napi::Array>();
  if (policyCode > 2 || key.Length() != 40 || table.Length() == 0 || table.Length() > 128) {
    ThrowArg(env, "setSteering(policy 0..2, key[40], table[1..128])");
    return env.Undefined();
  }
  StopAll();
  policy = static_cast<SteerPolicy>(policyCode);
  std::memcpy(rss.key, key.Data(), 40);
  rss.tableSize = table.Length();
  for (uint32_t i = 0; i < rss.tableSize; i++) {
    uint32_t v = table.Get(i).As<Napi::Number>().Uint32Value();
    rss.table[i] = static_cast<uint16_t>(v < pairs ? v : 0);
  }
  // Handover rings, one per (source, target) pair, made by the source on first use: room for
  // several 64 KiB GSO frames, less per ring when there are many pairs.
  if (policy != SteerPolicy::kNone && pairs > 1 && !handover) {
    handoverBytes = pairs <= 8 ? (512u << 10) : pairs <= 16 ? (256u << 10) : (160u << 10);
    handover.reset(new std::atomic<HandoverRing*>[size_t(pairs) * pairs]);
    for (size_t i = 0; i < size_t(pairs) * pairs; i++)
      handover[i].store(nullptr, std::memory_order_relaxed);
  }
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return env.Undefined();
}

void NetDevice::StopPair(uint32_t pair) {
  threads_[threadOf_[pair]]->Stop();
}

void NetDevice::MaybeStartPair(uint32_t pair) {
  if (paused_ || closed_) return;
  WorkerThread& t = *threads_[threadOf_[pair]];
  for (PairWorker* p : t.pairs)
    if (p->Active()) {
      t.Start();
      return;
    }
}

void NetDevice::StopAll() {
  for (auto& t : threads_) t->Stop();
}

// Groups pairs into threads: pair p runs on thread threadOf[p].
void NetDevice::BuildThreads(const std::vector<uint32_t>& threadOf) {
  StopAll();
  threads_.clear();
  threadOf_ = threadOf;
  uint32_t n = 0;
  for (uint32_t t : threadOf) n = std::max(n, t + 1);
  for (uint32_t t = 0; t < n; t++) threads_.emplace_back(new WorkerThread(this, t));
  for (uint32_t p = 0; p < threadOf.size(); p++)
    threads_[threadOf[p]]->pairs.push_back(workers_[p].get());
}

// setThreads(threadOf: number[]): pair p runs on thread threadOf[p] (one entry per pair).
Napi::Value NetDevice::SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array arr = info[0].As<Napi::Array>();
  if (arr.Length() != pairs) {
    ThrowArg(env, "setThreads: one thread index per queue pair");
    return env.Undefined();
  }
  std::vector<uint32_t> threadOf(pairs);
  for (uint32_t p = 0; p < pairs; p++) {
    threadOf[p] = arr.Get(p).As<Napi::Number>().Uint32Value();
    if (threadOf[p] >= pairs) {
      ThrowArg(env, "setThreads: thread index out of range");
      return env.Undefined();
    }
  }
  BuildThreads(threadOf);
  for (uint32_t p = 0; p < pairs; p++) MaybeStartPair(p);
  return env.Undefined();
}

static uint64_t BigU64(const Napi::Value& v) {
  bool lossless;
  return v.As<Napi::BigInt>().Uint64Value(&lossless);
}

// setMemory([{mappingId, gpa, size, va}]): called while paused (quiesced).
Napi::Value NetDevice::SetMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array arr = info[0].As<Napi::Array>();
  EnvState* st = GetState(env);
  GuestMemory m;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    uint32_t id = o.Get("mappingId").As<Napi::Number>().Uint32Value();
    auto it = st->mappings.find(id);
    if (it == st->mappings.end()) {
      ThrowErrno(env, "setMemory", EINVAL, "unknown mapping " + std::to_string(id));
      return env.Undefined();
    }
    m.regions.push_back(GuestRegion{BigU64(o.Get("gpa")), BigU64(o.Get("size")),
                                    BigU64(o.Get("va")),
                                    static_cast<uint8_t*>(it->second.base) + it->second.delta});
  }
  StopAll();
  mem = std::move(m);
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return env.Undefined();
}

void NetDevice::ApplyTapOffloads() {
  if (host != HostKind::kTap) return;
  // TUNSETOFFLOAD: what the TAP may hand us is what the guest negotiated to receive.
  unsigned off = 0;
  if (Has(kFGuestCsum)) {
    off |= TUN_F_CSUM;
    if (Has(kFGuestTso4)) off |= TUN_F_TSO4;
    if (Has(kFGuestTso6)) off |= TUN_F_TSO6;
    if ((Has(kFGuestTso4) || Has(kFGuestTso6)) && Has(kFGuestEcn)) off |= TUN_F_TSO_ECN;
    if (Has(kFGuestUfo)) off |= TUN_F_UFO;
  }
  int sz = static_cast<int>(hdrLen);
  for (int fd : hostFds) {
    ioctl(fd, TUNSETVNETHDRSZ, &sz);
    ioctl(fd, TUNSETOFFLOAD, off);
  }
}

Napi::Value NetDevice::SetFeatures(const Napi::CallbackInfo& info) {
  StopAll();
  features = BigU64(info[0]);
  // virtio 1.2 §5.1.6: the header has num_buffers with VERSION_1 or MRG_RXBUF, else 10 bytes.
  hdrLen = (Has(kFVersion1) || Has(kFMrgRxbuf)) ? 12 : 10;
  for (auto& q : queues) {
    q.cfg.eventIdx = Has(kFEventIdx);
    q.cfg.indirect = Has(kFIndirect);
    q.cfg.notifyOnEmpty = Has(kFNotifyOnEmpty);
  }
  ApplyTapOffloads();
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return info.Env().Undefined();
}

// setHost(kind, fds[], sourceLen): kind 0 null, 1 loopback, 2 tap, 3 af-packet.
Napi::Value NetDevice::SetHost(const Napi::CallbackInfo& info) {
  StopAll();
  host = static_cast<HostKind>(info[0].As<Napi::Number>().Uint32Value());
  hostFds.clear();
  Napi::Array fds = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < fds.Length(); i++)
    hostFds.push_back(fds.Get(i).As<Napi::Number>().Int32Value());
  sourceLen = info[2].As<Napi::Number>().Uint32Value();
  ApplyTapOffloads();
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return info.Env().Undefined();
}

// startQueue(index, {num, desc, avail, used: bigint VAs, lastAvailIdx, kickFd, callFd, enabled})
Napi::Value NetDevice::StartQueue(const Napi::CallbackInfo& info) {
  uint32_t index = info[0].As<Napi::Number>().Uint32Value();
  Napi::Object o = info[1].As<Napi::Object>();
  if (index >= queues.size()) {
    ThrowArg(info.Env(), "startQueue: index out of range");
    return info.Env().Undefined();
  }
  StopPair(index / 2);
  QueueState& q = queues[index];
  q.cfg.num = static_cast<uint16_t>(o.Get("num").As<Napi::Number>().Uint32Value());
  q.cfg.descVa = BigU64(o.Get("desc"));
  q.cfg.availVa = BigU64(o.Get("avail"));
  q.cfg.usedVa = BigU64(o.Get("used"));
  q.cfg.eventIdx = Has(kFEventIdx);
  q.cfg.indirect = Has(kFIndirect);
  q.cfg.notifyOnEmpty = Has(kFNotifyOnEmpty);
  q.lastAvailIdx = static_cast<uint16_t>(o.Get("lastAvailIdx").As<Napi::Number>().Uint32Value());
  // usedIdx < 0: continue from used->idx in guest memory, as libvhost-user does. After a
  // backend restart QEMU resumes the ring there (split rings only).
  int64_t usedIdx = o.Get("usedIdx").As<Napi::Number>().Int64Value();
  if (usedIdx < 0) {
    const uint8_t* u = mem.VaToHost(q.cfg.usedVa, 4);
    usedIdx = u ? __atomic_load_n(reinterpret_cast<const uint16_t*>(u + 2), __ATOMIC_ACQUIRE) : 0;
  }
  q.usedIdx = static_cast<uint16_t>(usedIdx);
  q.kickFd = o.Get("kickFd").As<Napi::Number>().Int32Value();
  q.callFd = o.Get("callFd").As<Napi::Number>().Int32Value();
  q.enabled = o.Get("enabled").ToBoolean();
  q.broken = false;
  q.error = 0;
  q.started = true;
  if (index % 2 == 0) UpdateRxReady(index / 2);
  MaybeStartPair(index / 2);
  return info.Env().Undefined();
}

// stopQueue(index) -> {lastAvailIdx, usedIdx, broken, error}
Napi::Value NetDevice::StopQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t index = info[0].As<Napi::Number>().Uint32Value();
  if (index >= queues.size()) {
    ThrowArg(env, "stopQueue: index out of range");
    return env.Undefined();
  }
  StopPair(index / 2);
  QueueState& q = queues[index];
  q.started = false;
  q.kickFd = q.callFd = -1;
  if (index % 2 == 0) UpdateRxReady(index / 2);
  Napi::Object r = Napi::Object::New(env);
  r.Set("lastAvailIdx", q.lastAvailIdx);
  r.Set("usedIdx", q.usedIdx);
  r.Set("broken", q.broken);
  r.Set("error", q.error);
  MaybeStartPair(index / 2);
  return r;
}

Napi::Value NetDevice::SetEnabled(const Napi::CallbackInfo& info) {
  uint32_t index = info[0].As<Napi::Number>().Uint32Value();
  if (index < queues.size()) {
    StopPair(index / 2);
    queues[index].enabled = info[1].ToBoolean();
    if (index % 2 == 0) UpdateRxReady(index / 2);
    MaybeStartPair(index / 2);
  }
  return info.Env().Undefined();
}

Napi::Value NetDevice::SetCall(const Napi::CallbackInfo& info) {
  uint32_t index = info[0].As<Napi::Number>().Uint32Value();
  if (index < queues.size()) {
    StopPair(index / 2);
    queues[index].callFd = info[1].As<Napi::Number>().Int32Value();
    MaybeStartPair(index / 2);
  }
  return info.Env().Undefined();
}

Napi::Value NetDevice::Pause(const Napi::CallbackInfo& info) {
  paused_ = true;
  StopAll();
  return info.Env().Undefined();
}

Napi::Value NetDevice::Resume(const Napi::CallbackInfo& info) {
  paused_ = false;
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return info.Env().Undefined();
}

Napi::Value NetDevice::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

// setObserve({capture, trace, snapLen, bytes}): per-vring observation rings of `bytes` each
// (capture: frames cut to snapLen; trace: ring steps). Both false turns observation off.
Napi::Value NetDevice::SetObserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) {
    ThrowArg(env, "setObserve({capture, trace, snapLen, bytes})");
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  bool capture = o.Get("capture").ToBoolean();
  bool trace = o.Get("trace").ToBoolean();
  uint32_t snap =
      o.Get("snapLen").IsNumber() ? o.Get("snapLen").As<Napi::Number>().Uint32Value() : 262144;
  uint32_t bytes =
      o.Get("bytes").IsNumber() ? o.Get("bytes").As<Napi::Number>().Uint32Value() : (4u << 20);
  if (bytes < 4096 || bytes > (1u << 30) || snap > (1u << 20)) {
    ThrowArg(env, "setObserve: bytes 4 KiB..1 GiB, snapLen <= 1 MiB");
    return env.Undefined();
  }
  StopAll();
  observers.clear();
  if (capture || trace) {
    for (uint32_t v = 0; v < queues.size(); v++)
      observers.emplace_back(
          new VringObserver(static_cast<uint16_t>(v), bytes, capture, trace, snap));
  }
  for (uint32_t p = 0; p < workers_.size(); p++) MaybeStartPair(p);
  return env.Undefined();
}

// drainObserve(buf): moves waiting records into `buf` as [u32 len][record] each, vring by
// vring, until it is full. Returns the bytes written. Only the JS thread consumes. Each call
// starts one vring further on, so a busy vring cannot keep the others from being drained.
Napi::Value NetDevice::DrainObserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer()) {
    ThrowArg(env, "drainObserve(buffer)");
    return env.Undefined();
  }
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  uint8_t* out = buf.Data();
  const size_t cap = buf.Length();
  size_t n = 0;
  const size_t count = observers.size();
  if (count) drainStart_ = (drainStart_ + 1) % count;
  for (size_t k = 0; k < count; k++) {
    auto& o = observers[(drainStart_ + k) % count];
    if (!o) continue;
    bool room = o->ring.Drain([&](const uint8_t* rec, uint32_t len) {
      if (cap - n < 4 + size_t(len)) return false;
      std::memcpy(out + n, &len, 4);
      std::memcpy(out + n + 4, rec, len);
      n += 4 + len;
      return true;
    });
    if (!room) break;
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// observeLost(): records dropped per vring because JS fell behind.
Napi::Value NetDevice::ObserveLost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env, observers.size());
  for (uint32_t v = 0; v < observers.size(); v++)
    a.Set(v, Napi::Number::New(env, observers[v] ? static_cast<double>(observers[v]->ring.lost.load(
                                                       std::memory_order_relaxed))
                                                 : 0));
  return a;
}

void InitNetDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("NetDevice", NetDevice::Init(env));
  Napi::Array names = Napi::Array::New(env);
  for (uint32_t i = 0; i < kRingErrorCount; i++)
    names.Set(i, Napi::String::New(env, RingErrorName(i)));
  exports.Set("ringErrorNames", names);
  exports.Set("countersPerVring", Napi::Number::New(env, kCountersPerVring));
}

}  // namespace vun
