#include "host_port.h"

#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

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
  uint32_t Receive(uint8_t* buf, uint32_t cap, uint32_t hdrLen) override {
    if (sourceLen_ == 0 || hdrLen + sourceLen_ > cap) return 0;
    std::memset(buf, 0, hdrLen);
    uint8_t* f = buf + hdrLen;
    std::memset(f, 0xff, 6);
    const uint8_t src[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    std::memcpy(f + 6, src, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    return hdrLen + sourceLen_;
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
// our header size), so a frame is one writev of the chain's segments.
class TapPort : public HostPort {
 public:
  explicit TapPort(int fd) : fd_(fd) {}
  Sent Send(const Element& e, uint32_t, uint8_t* scratch, uint32_t cap, uint32_t*) override {
    iovec iov[64];
    if (e.outNum <= 64) {
      for (uint32_t k = 0; k < e.outNum; k++) iov[k] = iovec{e.segs[k].host, e.segs[k].len};
      return writev(fd_, iov, static_cast<int>(e.outNum)) >= 0 ? Sent::kOk : Sent::kFailed;
    }
    uint32_t len = CopyChainOut(e, scratch, cap);
    if (len == UINT32_MAX) return Sent::kTooBig;
    return write(fd_, scratch, len) >= 0 ? Sent::kOk : Sent::kFailed;
  }
  Sent SendFrame(const uint8_t* frame, uint32_t len, uint8_t*, uint32_t, uint32_t*) override {
    return write(fd_, frame, len) >= 0 ? Sent::kOk : Sent::kFailed;
  }
  bool Produces() const override { return true; }
  int Fd() const override { return fd_; }
  uint32_t Receive(uint8_t* buf, uint32_t cap, uint32_t hdrLen) override {
    for (;;) {
      ssize_t n = read(fd_, buf, cap);
      if (n < 0) return 0;
      if (n >= static_cast<ssize_t>(hdrLen)) return static_cast<uint32_t>(n);
      // Shorter than a header: not a frame; read the next one.
    }
  }
  void Configure(uint32_t hdrLen, unsigned offloads) override {
    int sz = static_cast<int>(hdrLen);
    ioctl(fd_, TUNSETVNETHDRSZ, &sz);
    ioctl(fd_, TUNSETOFFLOAD, offloads);
  }

 private:
  int fd_;
};

// AF_PACKET with PACKET_VNET_HDR: the kernel speaks the 10-byte header, without num_buffers.
class AfPacketPort : public HostPort {
 public:
  explicit AfPacketPort(int fd) : fd_(fd) {}
  Sent Send(const Element& e, uint32_t, uint8_t* scratch, uint32_t cap, uint32_t*) override {
    uint32_t len = CopyChainOut(e, scratch, cap);
    if (len == UINT32_MAX) return Sent::kTooBig;
    return SendFrame(scratch, len, nullptr, 0, nullptr);
  }
  Sent SendFrame(const uint8_t* frame, uint32_t len, uint8_t*, uint32_t, uint32_t*) override {
    if (len < 12) return Sent::kFailed;
    // Drop num_buffers (bytes 10-11).
    iovec iov[2] = {{const_cast<uint8_t*>(frame), 10},
                    {const_cast<uint8_t*>(frame) + 12, len - 12}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    return sendmsg(fd_, &m, MSG_DONTWAIT) >= 0 ? Sent::kOk : Sent::kFailed;
  }
  bool Produces() const override { return true; }
  int Fd() const override { return fd_; }
  uint32_t Receive(uint8_t* buf, uint32_t cap, uint32_t) override {
    // Read the 10-byte header 2 bytes in, then move it down so num_buffers (bytes 10-11) is
    // ours to fill.
    ssize_t n = recv(fd_, buf + 2, cap - 2, MSG_DONTWAIT);
    if (n < 10) return 0;
    std::memmove(buf, buf + 2, 10);
    return static_cast<uint32_t>(n + 2);
  }

 private:
  int fd_;
};

}  // namespace

std::unique_ptr<HostPort> MakeHostPort(HostKind kind, int fd, uint32_t sourceLen) {
  switch (kind) {
    case HostKind::kTap:
      if (fd >= 0) return std::unique_ptr<HostPort>(new TapPort(fd));
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
