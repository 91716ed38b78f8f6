#include "host_port.h"

#include <liburing.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "write_chooser.h"

namespace vun {

uint32_t CopyChainOut(const Element& e, uint8_t* dst, uint32_t cap) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < e.outNum; i++) {
    uint32_t len = e.segs[i].len;
    if (len > cap - n) return UINT32_MAX;
    std::memcpy(dst + n, e.segs[i].host, len);
    n += len;
  }
  return n;
}

namespace {

// The data path's system calls go through syscall(2): libc's read, write, sendmmsg and recvmmsg
// are cancellation points, and entering and leaving that state took 5% of the core at 3 Mpps
// (perf; TAP forwarding 64 B 1.05x without it). No thread of ours is ever cancelled.
template <typename... A>
long Sys(long nr, A... args) {
  return syscall(nr, args...);
}

// null: discards what the guest sends; with a source length, offers broadcast frames of that
// length (ethertype 0x88b5, local experimental) as fast as the guest takes them.
class NullPort : public HostPort {
 public:
  explicit NullPort(uint32_t sourceLen) : sourceLen_(sourceLen) {}
  Sent Send(const Element&, uint32_t, uint8_t*, uint32_t, uint32_t*) override { return Sent::kOk; }
  Sent SendFrame(const uint8_t*, uint32_t, uint8_t*, uint32_t, uint32_t*) override {
    return Sent::kOk;
  }
  bool Produces() const override { return sourceLen_ > 0; }
  Frame Receive(uint8_t* buf, uint32_t cap, uint32_t hdrLen) override {
    if (sourceLen_ == 0 || hdrLen + sourceLen_ > cap) return {};
    std::memset(buf, 0, hdrLen);
    uint8_t* f = buf + hdrLen;
    std::memset(f, 0xff, 6);
    const uint8_t src[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    std::memcpy(f + 6, src, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    return {buf, hdrLen + sourceLen_};
  }

 private:
  uint32_t sourceLen_;
};

// loopback: what the guest sends comes back to it (through steering, like a host frame).
class LoopbackPort : public HostPort {
 public:
  Sent Send(const Element& e, uint32_t, uint8_t* scratch, uint32_t cap, uint32_t* len) override {
    uint32_t n = CopyChainOut(e, scratch, cap);
    if (n == UINT32_MAX) return Sent::kTooBig;
    *len = n;
    return Sent::kLooped;
  }
  Sent SendFrame(const uint8_t* frame, uint32_t len, uint8_t* scratch, uint32_t cap,
                 uint32_t* looped) override {
    if (len > cap) return Sent::kTooBig;
    if (frame != scratch) std::memcpy(scratch, frame, len);
    *looped = len;
    return Sent::kLooped;
  }
};

// TAP with IFF_VNET_HDR: the virtio-net header passes straight through (TUNSETVNETHDRSZ is
// our header size). A frame is copied whole and written as one buffer: faster than a writev of
// the guest's own segments at every size measured, 64 B to 32 KB (1.3x at 64 B; perf: the
// kernel's copy fell from 31% of the core to 9%, ours takes 4.5%; bench/notes.md).
//
// With io_uring (the default, where the kernel lets us set up a ring), a burst's frames of up
// to kSmall bytes are copied into the batch's slots and their writes queued, and Flush submits
// them all with one io_uring_enter instead of a write each. The kernel does the same work for
// each frame; what goes is the system call's entry and exit per frame, which on a virtualised
// host can cost more than the frame itself (bench/notes.md, "io_uring for TAP writes"). The fd
// is O_NONBLOCK, so io_uring issues each write inline, in the submitting thread, as a write
// would be. A larger frame (GSO) is written at once with one write, after what is queued.
//
// Which of the two ways a port takes is the WriteChooser's (write_chooser.h): by default it
// measures both on this machine and keeps the cheaper per frame; io-uring=on|off fixes it. Each
// burst's time runs from its first frame to the end of Flush, copies included (the same either
// way), on CLOCK_MONOTONIC (vDSO, no system call).
class TapPort : public HostPort {
 public:
  static constexpr uint32_t kBatch = kMaxBurst;
  static constexpr uint32_t kSmall = 2048;

  // batch: io_uring allowed; choose: by cost (else io_uring whenever allowed).
  TapPort(int fd, bool batch, bool choose)
      : fd_(fd),
        batch_(batch),
        chooser_(!batch   ? int{WriteChooser::kPlain}
                 : choose ? -1
                          : int{WriteChooser::kUring}) {
    // Test only (VUN_TEST_TAP_WRITE_DELAY_NS=plain:N or uring:N): each frame written that way
    // costs N ns more, so a test can see the chooser move off a way made slow on purpose.
    if (const char* d = getenv("VUN_TEST_TAP_WRITE_DELAY_NS")) {
      const bool uring = std::strncmp(d, "uring:", 6) == 0;
      if (uring || std::strncmp(d, "plain:", 6) == 0)
        delayNs_[uring] = std::strtoull(d + 6, nullptr, 10);
    }
  }
  ~TapPort() override {
    if (uring_) io_uring_queue_exit(&ring_);
  }
  WriteCost LastWrite() const override { return last_; }
  Sent Send(const Element& e, uint32_t, uint8_t* scratch, uint32_t cap, uint32_t*) override {
    Started();
    if (e.outLen <= kSmall && Batching()) {
      uint8_t* slot = NextSlot();
      Queue(slot, CopyChainOut(e, slot, kSmall));
      return Sent::kOk;
    }
    uint32_t len = CopyChainOut(e, scratch, cap);
    if (len == UINT32_MAX) return Sent::kTooBig;
    return WriteNow(scratch, len);
  }
  Sent SendFrame(const uint8_t* frame, uint32_t len, uint8_t*, uint32_t, uint32_t*) override {
    Started();
    if (len <= kSmall && Batching()) {
      uint8_t* slot = NextSlot();
      std::memcpy(slot, frame, len);
      Queue(slot, len);
      return Sent::kOk;
    }
    return WriteNow(frame, len);
  }
  uint32_t Flush() override {
    const uint32_t refused = refused_ + Submit();
    refused_ = 0;
    last_ = {};
    if (burstFrames_) {
      const uint32_t way = chooser_.Current();
      if (delayNs_[way]) Spin(delayNs_[way] * burstFrames_);
      const uint64_t now = NowNs();
      last_ = {way, burstFrames_, now - burstStart_};
      chooser_.Burst(burstFrames_, sampled_ ? ThreadCpuNs() - cpuStart_ : now - burstStart_, now);
      burstFrames_ = 0;
    }
    return refused;
  }
  bool Produces() const override { return true; }
  int Fd() const override { return fd_; }
  Frame Receive(uint8_t* buf, uint32_t cap, uint32_t hdrLen) override {
    for (;;) {
      const long n = Sys(SYS_read, fd_, buf, cap);
      if (n < 0) return {};
      if (n >= static_cast<long>(hdrLen)) return {buf, static_cast<uint32_t>(n)};
      // Shorter than a header: not a frame; read the next one.
    }
  }
  void Configure(uint32_t hdrLen, unsigned offloads) override {
    int sz = static_cast<int>(hdrLen);
    ioctl(fd_, TUNSETVNETHDRSZ, &sz);
    ioctl(fd_, TUNSETOFFLOAD, offloads);
  }

 private:
  // The ring is set up by the worker thread that first sends (its io_uring_enter calls are
  // that thread's); a kernel that refuses one (io_uring_disabled, a seccomp filter) leaves
  // the port on plain writes.
  bool Batching() {
    if (!batch_ || chooser_.Current() != WriteChooser::kUring) return false;
    if (!uring_) {
      batch_ = false;
      io_uring_params p{};
      p.flags = IORING_SETUP_COOP_TASKRUN;  // no IPI to the thread for its completions
      if (io_uring_queue_init_params(kBatch, &ring_, &p) != 0) {
        p = io_uring_params{};
        if (io_uring_queue_init_params(kBatch, &ring_, &p) != 0) {
          chooser_.Refused();
          return false;
        }
      }
      slots_.resize(size_t(kBatch) * kSmall);
      uring_ = batch_ = true;
    }
    return true;
  }
  // A frame of this burst: the first starts its clock.
  void Started() {
    if (burstFrames_++ != 0) return;
    burstStart_ = NowNs();
    sampled_ = chooser_.Sampling(burstStart_);
    if (sampled_) cpuStart_ = ThreadCpuNs();
  }
  static uint64_t ThreadCpuNs() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return uint64_t(t.tv_sec) * 1'000'000'000ull + uint64_t(t.tv_nsec);
  }
  static uint64_t NowNs() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return uint64_t(t.tv_sec) * 1'000'000'000ull + uint64_t(t.tv_nsec);
  }
  static void Spin(uint64_t ns) {
    const uint64_t until = NowNs() + ns;
    while (NowNs() < until) {
    }
  }
  // The slot for the next queued write; a full batch is submitted first.
  uint8_t* NextSlot() {
    if (n_ == kBatch) refused_ += Submit();
    return slots_.data() + size_t(n_) * kSmall;
  }
  void Queue(uint8_t* slot, uint32_t len) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);  // never null: at most kBatch queued
    io_uring_prep_write(sqe, fd_, slot, len, 0);
    n_++;
  }
  Sent WriteNow(const uint8_t* frame, uint32_t len) {
    refused_ += Submit();  // what was queued first, in the guest's order
    return Sys(SYS_write, fd_, frame, len) >= 0 ? Sent::kOk : Sent::kFailed;
  }
  // Submits what is queued and waits for every completion (each write has finished when it
  // is reaped, so the slots can be filled again); returns how many writes failed.
  uint32_t Submit() {
    if (n_ == 0) return 0;
    uint32_t failed = 0, seen = 0;
    int r;
    do r = io_uring_submit_and_wait(&ring_, n_);
    while (r == -EINTR);
    while (r >= 0 && seen < n_) {
      io_uring_cqe* cqe = nullptr;
      do r = io_uring_wait_cqe(&ring_, &cqe);
      while (r == -EINTR);
      if (r < 0) break;
      if (cqe->res < 0) failed++;
      io_uring_cqe_seen(&ring_, cqe);
      seen++;
    }
    if (r < 0) {
      // Not expected (the kernel out of memory for requests): the writes not reaped count as
      // refused and the port goes on with plain writes, its ring closed.
      failed += n_ - seen;
      io_uring_queue_exit(&ring_);
      uring_ = batch_ = false;
      chooser_.Refused();
    }
    n_ = 0;
    return failed;
  }

  int fd_;
  bool batch_;          // io_uring wanted (and, once tried, available)
  bool uring_ = false;  // ring_ is set up
  io_uring ring_{};
  std::vector<uint8_t> slots_;  // kBatch slots of kSmall bytes
  uint32_t n_ = 0;              // writes queued
  uint32_t refused_ = 0;        // failed writes of batches submitted before Flush
  WriteChooser chooser_;
  uint32_t burstFrames_ = 0;  // frames sent since the last Flush
  uint64_t burstStart_ = 0;
  uint64_t cpuStart_ = 0;  // the thread's CPU time at the burst's start, while sampling
  bool sampled_ = false;
  WriteCost last_;
  uint64_t delayNs_[2] = {0, 0};  // test only: VUN_TEST_TAP_WRITE_DELAY_NS
};

// AF_PACKET with PACKET_VNET_HDR: the kernel speaks the 10-byte header, without num_buffers.
// Both ways in batches, one system call for many frames: a transmit burst's frames leave in one
// sendmmsg (Flush, before their chains are completed), and frames for the guest come in by
// recvmmsg, up to kBatch at a time, into the port's buffers; or, when the socket has a
// TPACKET_V3 receive ring (rx-ring), are read where the kernel put them, with no system call.
class AfPacketPort : public HostPort {
 public:
  static constexpr uint32_t kBatch = 32;
  static constexpr uint32_t kSlot = 65536 + 12 + 16;  // a 64 KiB GSO frame and its header
  static constexpr uint32_t kSmall = 2048;  // a transmitted frame up to this size is copied

  explicit AfPacketPort(int fd) : fd_(fd), copies_(kBatch), small_(size_t(kBatch) * kSmall) {
    int version = 0;
    socklen_t l = sizeof(version);
    if (getsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, &l) == 0 && version == TPACKET_V3) {
      // afPacketOpen mapped this ring once already; a failure here leaves the port mute.
      void* m = mmap(nullptr, AfPacketRing::Bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      ring_ = m == MAP_FAILED ? nullptr : static_cast<uint8_t*>(m);
      ringMode_ = true;
      return;
    }
    slots_.resize(size_t(kBatch) * kSlot);
    for (uint32_t i = 0; i < kBatch; i++) {
      // Read each header 2 bytes in, so that moving it down leaves num_buffers to fill.
      rxIov_[i] = iovec{slots_.data() + size_t(i) * kSlot + 2, kSlot - 2};
      rx_[i].msg_hdr.msg_iov = &rxIov_[i];
      rx_[i].msg_hdr.msg_iovlen = 1;
    }
  }

  // Queues the chain's frame minus num_buffers (bytes 10-11): a frame of up to kSmall bytes
  // copied into the batch's slot, as one iovec (1.12x the frames per second of iovecs into
  // the guest's buffers at 64 B, 1.09x at 1518 B; no difference at 4000 B), a larger one as
  // iovecs of its segments, uncopied.
  Sent Send(const Element& e, uint32_t, uint8_t* scratch, uint32_t cap, uint32_t*) override {
    if (e.outLen > cap) return Sent::kTooBig;
    if (e.outLen < 12) return Sent::kFailed;
    if (e.outNum + 1 > kIovs) {
      uint32_t len = CopyChainOut(e, scratch, cap);
      return SendFrame(scratch, len, nullptr, 0, nullptr);
    }
    if (n_ == kBatch || iovUsed_ + e.outNum + 1 > kIovs) refused_ += SendBatch();
    iovec* iov = iov_ + iovUsed_;
    if (e.outLen <= kSmall) {
      uint8_t* c = small_.data() + size_t(n_) * kSmall;
      const uint32_t len = CopyChainOut(e, c, kSmall);
      std::memmove(c + 10, c + 12, len - 12);
      iov[0] = iovec{c, len - 2};
      Queue(iov, 1);
      return Sent::kOk;
    }
    uint32_t k = 0, pos = 0;
    for (uint32_t i = 0; i < e.outNum; i++) {
      const Segment& g = e.segs[i];
      // The parts of [pos, pos + len) outside [10, 12).
      if (pos < 10) iov[k++] = iovec{g.host, std::min<uint64_t>(g.len, 10 - pos)};
      if (pos + g.len > 12) {
        const uint32_t from = pos >= 12 ? 0 : 12 - pos;
        iov[k++] = iovec{g.host + from, g.len - from};
      }
      pos += g.len;
    }
    Queue(iov, k);
    return Sent::kOk;
  }
  // A frame the device holds (a lie's copy): copied, since the caller reuses its buffer.
  Sent SendFrame(const uint8_t* frame, uint32_t len, uint8_t*, uint32_t, uint32_t*) override {
    if (len < 12) return Sent::kFailed;
    if (len > kSlot) return Sent::kTooBig;
    if (n_ == kBatch || iovUsed_ + 2 > kIovs) refused_ += SendBatch();
    std::vector<uint8_t>& c = copies_[n_];
    c.assign(frame, frame + len);
    iovec* iov = iov_ + iovUsed_;
    iov[0] = iovec{c.data(), 10};
    iov[1] = iovec{c.data() + 12, len - 12};
    Queue(iov, 2);
    return Sent::kOk;
  }
  // What the batches sent so far in this burst (a full batch leaves at once) and this last one
  // refused.
  uint32_t Flush() override {
    const uint32_t refused = refused_ + SendBatch();
    refused_ = 0;
    return refused;
  }

  ~AfPacketPort() override {
    if (ring_) munmap(ring_, AfPacketRing::Bytes());
  }

  bool Produces() const override { return true; }
  int Fd() const override { return fd_; }
  Frame Receive(uint8_t*, uint32_t, uint32_t) override {
    if (ringMode_) return ReceiveFromRing();
    for (;;) {
      if (next_ == got_) {
        next_ = got_ = 0;
        const long r = Sys(SYS_recvmmsg, fd_, rx_, kBatch, MSG_DONTWAIT, nullptr);
        if (r <= 0) return {};
        got_ = static_cast<uint32_t>(r);
      }
      const uint32_t i = next_++;
      const uint32_t n = rx_[i].msg_len;
      if (n < 10) continue;  // shorter than the header: not a frame
      uint8_t* buf = slots_.data() + size_t(i) * kSlot;
      std::memmove(buf, buf + 2, 10);
      return {buf, n + 2};
    }
  }

 private:
  static constexpr uint32_t kIovs = 1024;  // iovecs of one batch (UIO_MAXIOV per frame)

  void Queue(iovec* iov, uint32_t k) {
    msghdr& m = tx_[n_].msg_hdr;
    m = msghdr{};
    m.msg_iov = iov;
    m.msg_iovlen = k;
    iovUsed_ += k;
    n_++;
  }
  tpacket_block_desc* Block(uint32_t i) const {
    return reinterpret_cast<tpacket_block_desc*>(ring_ + size_t(i) * AfPacketRing::kRingBlock);
  }
  static bool Ours(const tpacket_block_desc* b) {
    // Acquire: the kernel writes a block's frames, then its status (smp_wmb in
    // prb_close_block); this orders our reads of the frames after the status that says so.
    return __atomic_load_n(&b->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER;
  }
  // The next frame in the ring, read in place. A block's last frame stays valid until the next
  // call, which hands the block back to the kernel.
  Frame ReceiveFromRing() {
    if (!ring_) return {};
    for (;;) {
      if (left_ == 0) {
        if (holding_) {
          // Release: our reads of the block's frames come before the kernel may refill it.
          __atomic_store_n(&Block(block_)->hdr.bh1.block_status, TP_STATUS_KERNEL,
                           __ATOMIC_RELEASE);
          holding_ = false;
          block_ = (block_ + 1) % AfPacketRing::kRingBlocks;
        }
        if (!Ours(Block(block_)) && !FindOldestBlock()) return {};
        tpacket_block_desc* b = Block(block_);
        holding_ = true;
        left_ = b->hdr.bh1.num_pkts;
        next_ = b->hdr.bh1.offset_to_first_pkt;
        continue;
      }
      uint8_t* block = reinterpret_cast<uint8_t*>(Block(block_));
      auto* h = reinterpret_cast<tpacket3_hdr*>(block + next_);
      left_--;
      next_ += h->tp_next_offset;
      // Cut to fit the block (larger than a block's room): not the frame that was sent.
      if (h->tp_snaplen != h->tp_len) continue;
      // PACKET_VNET_HDR puts the 10-byte header just before the frame; moved 2 bytes down, it
      // leaves num_buffers to fill, as in the batch buffers. The 2 bytes below it are the
      // slack the kernel leaves after the frame's tpacket3_hdr and sockaddr_ll.
      uint8_t* frame = reinterpret_cast<uint8_t*>(h) + h->tp_mac;
      std::memmove(frame - 12, frame - 10, 10);
      return {frame - 12, h->tp_snaplen + 12};
    }
  }
  // Where the reader starts when its block is not ready: the oldest block the kernel handed
  // over (a new port on a socket whose ring an earlier one read, so the kernel is elsewhere).
  bool FindOldestBlock() {
    bool found = false;
    uint64_t oldest = 0;
    for (uint32_t i = 0; i < AfPacketRing::kRingBlocks; i++) {
      const tpacket_block_desc* b = Block(i);
      if (!Ours(b)) continue;
      if (!found || b->hdr.bh1.seq_num < oldest) {
        oldest = b->hdr.bh1.seq_num;
        block_ = i;
        found = true;
      }
    }
    return found;
  }

  // Sends what is queued; returns how many frames the kernel refused. A refused frame is
  // skipped and the rest sent; a full socket buffer (EAGAIN) refuses all that remain.
  uint32_t SendBatch() {
    uint32_t done = 0, failed = 0;
    while (done < n_) {
      const long r = Sys(SYS_sendmmsg, fd_, tx_ + done, n_ - done, MSG_DONTWAIT);
      if (r > 0) {
        done += static_cast<uint32_t>(r);
      } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        failed += n_ - done;
        break;
      } else {
        failed++;
        done++;
      }
    }
    n_ = iovUsed_ = 0;
    return failed;
  }

  int fd_;
  std::vector<uint8_t> slots_;                // receive: kBatch buffers of kSlot bytes
  std::vector<std::vector<uint8_t>> copies_;  // transmit: frames SendFrame copied
  std::vector<uint8_t> small_;                // transmit: kBatch slots of kSmall bytes
  mmsghdr rx_[kBatch] = {};
  iovec rxIov_[kBatch];
  uint32_t got_ = 0, next_ = 0;  // batch mode: frames read, next to return; ring: next's offset
  bool ringMode_ = false;        // the socket has a TPACKET_V3 receive ring
  uint8_t* ring_ = nullptr;
  uint32_t block_ = 0, left_ = 0;  // the block being read, and its frames not yet returned
  bool holding_ = false;           // block_ is ours until the next Receive after its last frame
  mmsghdr tx_[kBatch] = {};
  iovec iov_[kIovs];
  uint32_t n_ = 0, iovUsed_ = 0;
  uint32_t refused_ = 0;  // frames refused by batches sent before Flush
};

}  // namespace

std::unique_ptr<HostPort> MakeHostPort(HostKind kind, int fd, uint32_t sourceLen, uint32_t flags) {
  switch (kind) {
    case HostKind::kTap:
      if (fd >= 0)
        return std::unique_ptr<HostPort>(
            new TapPort(fd, flags & kHostTapIoUring, flags & kHostTapChoose));
      break;
    case HostKind::kAfPacket:
      if (fd >= 0) return std::unique_ptr<HostPort>(new AfPacketPort(fd));
      break;
    case HostKind::kLoopback:
      return std::unique_ptr<HostPort>(new LoopbackPort());
    case HostKind::kNull:
      return std::unique_ptr<HostPort>(new NullPort(sourceLen));
  }
  return std::unique_ptr<HostPort>(new NullPort(0));
}

}  // namespace vun
