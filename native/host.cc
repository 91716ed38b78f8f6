// Host backends, opening side: a TAP device (created when missing) and an AF_PACKET socket
// bound to an interface. The data path that uses them runs in the queue workers.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "env_state.h"
#include "errors.h"
#include "exports.h"
#include "host_port.h"

namespace vun {
namespace {

// Opens `path` (/dev/net/tun, or a macvtap's /dev/tapN) and sets the TAP flags with TUNSETIFF
// (with `name` on /dev/net/tun: attach to or create that TAP). Returns the fd, or -1 with a JS
// error thrown; `ifr` keeps the kernel's answer (the TAP's name).
int OpenTap(Napi::Env env, const std::string& path, const std::string& name,
            const Napi::Object& opts, ifreq* ifr) {
  int fd = open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, "open", errno, path);
    return -1;
  }
  *ifr = ifreq{};
  std::memcpy(ifr->ifr_name, name.data(), name.size());
  ifr->ifr_flags = IFF_TAP | IFF_NO_PI;
  if (opts.Get("vnetHdr").ToBoolean()) ifr->ifr_flags |= IFF_VNET_HDR;
  if (opts.Get("multiQueue").ToBoolean()) ifr->ifr_flags |= IFF_MULTI_QUEUE;
  if (ioctl(fd, TUNSETIFF, ifr) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ioctl(TUNSETIFF)", err, name.empty() ? path : name);
    return -1;
  }
  return fd;
}

// tapOpen(name, {vnetHdr, multiQueue, persist}) -> {fd, name}. TUNSETIFF attaches to an
// existing TAP of that name or creates one that lives as long as the fd; `persist`
// (TUNSETPERSIST) makes it outlive the fd, so a restarted backend attaches to the same device
// (its address and bridge port kept). With multiQueue, each call adds one queue (fd).
Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  Napi::Object opts = info[1].As<Napi::Object>();
  if (name.size() >= IFNAMSIZ) {
    ThrowErrno(env, "tapOpen", ENAMETOOLONG, name);
    return env.Undefined();
  }
  ifreq ifr;
  int fd = OpenTap(env, "/dev/net/tun", name, opts, &ifr);
  if (fd < 0) return env.Undefined();
  if (opts.Get("persist").ToBoolean() && ioctl(fd, TUNSETPERSIST, 1) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ioctl(TUNSETPERSIST)", err, name);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  Napi::Object r = Napi::Object::New(env);
  r.Set("fd", Napi::Number::New(env, fd));
  r.Set("name", Napi::String::New(env, ifr.ifr_name));
  return r;
}

// tapOpenPath(path, {vnetHdr, multiQueue}) -> fd: a character device that speaks the TAP API
// (a macvtap's /dev/tapN). TUNSETIFF sets only the flags there (the device exists); with
// multiQueue, each open is one more queue.
Napi::Value TapOpenPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ifreq ifr;
  int fd =
      OpenTap(env, info[0].As<Napi::String>().Utf8Value(), "", info[1].As<Napi::Object>(), &ifr);
  if (fd < 0) return env.Undefined();
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

// ifaceSetup(name, {mac?: Buffer(6), up: bool, mtu?: number}): link settings of a host
// interface (the TAP we created): a stable MAC, the MTU, and the link brought up.
Napi::Value IfaceSetup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  Napi::Object o = info[1].As<Napi::Object>();
  if (name.empty() || name.size() >= IFNAMSIZ) {
    ThrowErrno(env, "ifaceSetup", ENAMETOOLONG, name);
    return env.Undefined();
  }
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowErrno(env, "socket", errno);
    return env.Undefined();
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  const char* failed = nullptr;
  if (o.Has("mac") && o.Get("mac").IsBuffer()) {
    auto mac = o.Get("mac").As<Napi::Buffer<uint8_t>>();
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    std::memcpy(ifr.ifr_hwaddr.sa_data, mac.Data(), 6);
    if (ioctl(s, SIOCSIFHWADDR, &ifr) != 0) failed = "ioctl(SIOCSIFHWADDR)";
  }
  if (!failed && o.Has("mtu") && o.Get("mtu").IsNumber()) {
    ifr.ifr_mtu = o.Get("mtu").As<Napi::Number>().Int32Value();
    if (ioctl(s, SIOCSIFMTU, &ifr) != 0) failed = "ioctl(SIOCSIFMTU)";
  }
  if (!failed && o.Get("up").ToBoolean()) {
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) failed = "ioctl(SIOCGIFFLAGS)";
    ifr.ifr_flags |= IFF_UP;
    if (!failed && ioctl(s, SIOCSIFFLAGS, &ifr) != 0) failed = "ioctl(SIOCSIFFLAGS)";
  }
  int err = errno;
  close(s);
  if (failed) ThrowErrno(env, failed, err, name);
  return env.Undefined();
}

// afPacketOpen(ifname, {fanoutGroup?, fanoutMode?, qdiscBypass?, rxRing?}) -> fd: a raw
// AF_PACKET socket bound to the interface, with PACKET_VNET_HDR (a virtio-net header before
// every frame), promiscuous, not seeing its own interface's outgoing frames, joined to a fanout
// group (fanoutMode a PACKET_FANOUT_* value: how the kernel picks a socket; default HASH),
// sending past the interface's qdisc (PACKET_QDISC_BYPASS) and receiving into a TPACKET_V3 ring
// (AfPacketRing; mapped once here to show it can be) if asked.
Napi::Value AfPacketOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  int fanout = -1;
  int fanoutMode = PACKET_FANOUT_HASH;
  bool bypass = false, rxRing = false;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Value g = info[1].As<Napi::Object>().Get("fanoutGroup");
    if (g.IsNumber()) fanout = g.As<Napi::Number>().Int32Value();
    Napi::Value m = info[1].As<Napi::Object>().Get("fanoutMode");
    if (m.IsNumber()) fanoutMode = m.As<Napi::Number>().Int32Value();
    bypass = info[1].As<Napi::Object>().Get("qdiscBypass").ToBoolean();
    rxRing = info[1].As<Napi::Object>().Get("rxRing").ToBoolean();
  }
  if (name.empty() || name.size() >= IFNAMSIZ) {
    ThrowErrno(env, "afPacketOpen", ENAMETOOLONG, name);
    return env.Undefined();
  }
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) {
    ThrowErrno(env, "socket(AF_PACKET)", errno);
    return env.Undefined();
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, SIOCGIFINDEX, &ifr) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ioctl(SIOCGIFINDEX)", err, name);
    return env.Undefined();
  }
  int idx = ifr.ifr_ifindex;
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = idx;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "bind(AF_PACKET)", err, name);
    return env.Undefined();
  }
  int one = 1;
  const char* failed = nullptr;
  if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) != 0)
    failed = "setsockopt(PACKET_VNET_HDR)";
  if (!failed && setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0)
    failed = "setsockopt(PACKET_IGNORE_OUTGOING)";
  packet_mreq mr{};
  mr.mr_ifindex = idx;
  mr.mr_type = PACKET_MR_PROMISC;
  if (!failed && setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) != 0)
    failed = "setsockopt(PACKET_ADD_MEMBERSHIP)";
  if (!failed && bypass && setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) != 0)
    failed = "setsockopt(PACKET_QDISC_BYPASS)";
  if (!failed && rxRing) {
    int version = TPACKET_V3;
    tpacket_req3 req{};
    req.tp_block_size = AfPacketRing::kRingBlock;
    req.tp_block_nr = AfPacketRing::kRingBlocks;
    req.tp_frame_size = AfPacketRing::kRingBlock;  // V3 packs frames; this only has to divide
    req.tp_frame_nr = AfPacketRing::kRingBlocks;
    req.tp_retire_blk_tov = AfPacketRing::kRingTimeoutMs;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) != 0) {
      failed = "setsockopt(PACKET_VERSION)";
    } else if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) != 0) {
      failed = "setsockopt(PACKET_RX_RING)";
    } else {
      void* m = mmap(nullptr, AfPacketRing::Bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (m == MAP_FAILED)
        failed = "mmap(PACKET_RX_RING)";
      else
        munmap(m, AfPacketRing::Bytes());
    }
  }
  if (!failed && fanout >= 0) {
    int arg = (fanout & 0xffff) | (fanoutMode << 16);
    if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &arg, sizeof(arg)) != 0)
      failed = "setsockopt(PACKET_FANOUT)";
  }
  if (failed) {
    int err = errno;
    close(fd);
    ThrowErrno(env, failed, err, name);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

// fdRead(fd, buf) -> bytes, or -1 when nothing is waiting (the TS data path's host reads).
Napi::Value FdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  ssize_t n = read(fd, buf.Data(), buf.Length());
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Napi::Number::New(env, -1);
  if (n < 0) {
    ThrowErrno(env, "read", errno);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// fdWrite(fd, buf) -> bytes (the TS data path's host writes).
Napi::Value FdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  ssize_t n = write(fd, buf.Data(), buf.Length());
  if (n < 0) {
    ThrowErrno(env, "write", errno);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// tapSetVnet(fd, hdrLen, offloadFlags): TUNSETVNETHDRSZ and TUNSETOFFLOAD (TS data path).
Napi::Value TapSetVnet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int sz = info[1].As<Napi::Number>().Int32Value();
  unsigned off = info[2].As<Napi::Number>().Uint32Value();
  if (ioctl(fd, TUNSETVNETHDRSZ, &sz) != 0)
    ThrowErrno(env, "ioctl(TUNSETVNETHDRSZ)", errno);
  else if (ioctl(fd, TUNSETOFFLOAD, off) != 0)
    ThrowErrno(env, "ioctl(TUNSETOFFLOAD)", errno);
  return env.Undefined();
}

}  // namespace

void InitHost(Napi::Env env, Napi::Object exports) {
  exports.Set("tapOpen", Napi::Function::New<TapOpen>(env));
  exports.Set("tapOpenPath", Napi::Function::New<TapOpenPath>(env));
  exports.Set("afPacketOpen", Napi::Function::New<AfPacketOpen>(env));
  exports.Set("ifaceSetup", Napi::Function::New<IfaceSetup>(env));
  exports.Set("fdRead", Napi::Function::New<FdRead>(env));
  exports.Set("fdWrite", Napi::Function::New<FdWrite>(env));
  exports.Set("tapSetVnet", Napi::Function::New<TapSetVnet>(env));
}

}  // namespace vun
