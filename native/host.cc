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
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "env_state.h"
#include "errors.h"
#include "exports.h"

namespace vun {
namespace {

// tapOpen(name, {vnetHdr, multiQueue}) -> {fd, name}. TUNSETIFF attaches to an existing TAP
// of that name or creates one that lives as long as the fd.
Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  Napi::Object opts = info[1].As<Napi::Object>();
  if (name.size() >= IFNAMSIZ) {
    ThrowErrno(env, "tapOpen", ENAMETOOLONG, name);
    return env.Undefined();
  }
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, "open", errno, "/dev/net/tun");
    return env.Undefined();
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (opts.Get("vnetHdr").ToBoolean()) ifr.ifr_flags |= IFF_VNET_HDR;
  if (opts.Get("multiQueue").ToBoolean()) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ioctl(TUNSETIFF)", err, name);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  Napi::Object r = Napi::Object::New(env);
  r.Set("fd", Napi::Number::New(env, fd));
  r.Set("name", Napi::String::New(env, ifr.ifr_name));
  return r;
}

// afPacketOpen(ifname) -> fd: a raw AF_PACKET socket bound to the interface.
Napi::Value AfPacketOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
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
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitHost(Napi::Env env, Napi::Object exports) {
  exports.Set("tapOpen", Napi::Function::New<TapOpen>(env));
  exports.Set("afPacketOpen", Napi::Function::New<AfPacketOpen>(env));
}

}  // namespace vun
