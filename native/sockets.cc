// Unix stream sockets for vhost-user: listen, accept, connect, and recvmsg/sendmsg carrying
// SCM_RIGHTS fds. The framing (12-byte header, then exactly `size` payload bytes) lives in
// TS; these calls move bytes and fds and report exactly what happened.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "env_state.h"
#include "errors.h"
#include "exports.h"

namespace vun {
namespace {

constexpr int kMaxFds = 32;  // control-message room; the protocol allows at most 8 per message

bool FillAddr(const Napi::Env& env, const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) {
    ThrowErrno(env, "bind", ENAMETOOLONG, path);
    return false;
  }
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// Whether something accepts connections on the unix socket at `addr` (another running backend).
bool SocketIsLive(const sockaddr_un& addr) {
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return false;
  bool live = connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 ||
              errno == EAGAIN;  // a full backlog: still someone's listening socket
  close(probe);
  return live;
}

// unixListen(path, mode, backlog) -> fd. A stale socket file (nobody accepts on it) is
// removed; a live one is an error (EADDRINUSE), as is any other file at the path (EEXIST):
// neither is ever deleted.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  mode_t mode = info[1].As<Napi::Number>().Uint32Value() & 0777;
  int backlog = info[2].As<Napi::Number>().Int32Value();
  sockaddr_un addr;
  if (!FillAddr(env, path, &addr)) return env.Undefined();
  struct stat sb;
  if (lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) {
      ThrowErrno(env, "bind", EEXIST, "not a socket: " + path);
      return env.Undefined();
    }
    if (SocketIsLive(addr)) {
      ThrowErrno(env, "bind", EADDRINUSE, "another process accepts connections on " + path);
      return env.Undefined();
    }
    if (unlink(path.c_str()) != 0) {
      ThrowErrno(env, "unlink", errno, path);
      return env.Undefined();
    }
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return env.Undefined();
  }
  mode_t old = umask(0177);  // the file is born 0600; chmod below widens it only if asked
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  umask(old);
  if (rc != 0) {
    close(fd);
    ThrowErrno(env, "bind", err, path);
    return env.Undefined();
  }
  if (chmod(path.c_str(), mode) != 0 || listen(fd, backlog) != 0) {
    err = errno;
    close(fd);
    unlink(path.c_str());
    ThrowErrno(env, "listen", err, path);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

// adoptUnixFd(fd) -> { fd, listening }: takes an inherited unix stream socket (--fd) into
// ownership. SO_ACCEPTCONN tells them apart: a listening socket is accepted on; a connected one
// (a socketpair end, or a connection a manager made) is the session itself.
Napi::Value AdoptUnixFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int val = 0;
  socklen_t len = sizeof(val);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &val, &len) != 0) {
    ThrowErrno(env, "getsockopt", errno, "--fd " + std::to_string(fd));
    return env.Undefined();
  }
  if (val != AF_UNIX) {
    ThrowErrno(env, "getsockopt", ENOTSOCK, "--fd is not a unix socket");
    return env.Undefined();
  }
  len = sizeof(val);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &val, &len) != 0 || val != SOCK_STREAM) {
    ThrowErrno(env, "getsockopt", EPROTOTYPE, "--fd is not a stream socket");
    return env.Undefined();
  }
  int listening = 0;
  len = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) {
    ThrowErrno(env, "getsockopt", errno, "--fd " + std::to_string(fd));
    return env.Undefined();
  }
  if (!listening) {
    sockaddr_un peer{};
    socklen_t plen = sizeof(peer);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) {
      ThrowErrno(env, "getpeername", errno, "--fd is neither listening nor connected");
      return env.Undefined();
    }
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  GetState(env)->OwnFd(fd);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("listening", Napi::Boolean::New(env, listening != 0));
  return out;
}

Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = info[0].As<Napi::Number>().Int32Value();
  int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
      return Napi::Number::New(env, -1);
    ThrowErrno(env, "accept4", errno);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

// unixConnect(path) -> fd (non-blocking after connect).
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  if (!FillAddr(env, path, &addr)) return env.Undefined();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return env.Undefined();
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "connect", err, path);
    return env.Undefined();
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

// socketPair() -> [fd, fd]: connected non-blocking unix stream sockets (tests).
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
    ThrowErrno(env, "socketpair", errno);
    return env.Undefined();
  }
  EnvState* st = GetState(env);
  st->OwnFd(sv[0]);
  st->OwnFd(sv[1]);
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(uint32_t(0), sv[0]);
  a.Set(uint32_t(1), sv[1]);
  return a;
}

// recvMsg(fd, buf, offset, length, maxFds) -> {bytes, fds, ctrunc, extraFds}
//   bytes: >0 read, 0 peer closed, -1 nothing to read now.
// Fds beyond maxFds (CMSG_SPACE rounding can deliver more than asked) are closed here and
// counted in extraFds; ctrunc reports MSG_CTRUNC (the kernel dropped fds).
Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  size_t off = info[2].As<Napi::Number>().Int64Value();
  size_t len = info[3].As<Napi::Number>().Int64Value();
  int maxFds = info[4].As<Napi::Number>().Int32Value();
  if (off > buf.Length() || len > buf.Length() - off || maxFds < 0 || maxFds > kMaxFds) {
    ThrowArg(env, "recvMsg: range outside buffer");
    return env.Undefined();
  }
  iovec iov{buf.Data() + off, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    n = -1;
  else if (n < 0) {
    ThrowErrno(env, "recvmsg", errno);
    return env.Undefined();
  }
  EnvState* st = GetState(env);
  Napi::Array fds = Napi::Array::New(env);
  uint32_t kept = 0, extra = 0;
  if (n >= 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; i++) {
        int rfd;
        std::memcpy(&rfd, p + i, sizeof(int));
        if (static_cast<int>(kept) < maxFds) {
          st->OwnFd(rfd);
          fds.Set(kept++, rfd);
        } else {
          close(rfd);
          extra++;
        }
      }
    }
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("bytes", Napi::Number::New(env, static_cast<double>(n)));
  r.Set("fds", fds);
  r.Set("ctrunc", Napi::Boolean::New(env, n >= 0 && (msg.msg_flags & MSG_CTRUNC)));
  r.Set("extraFds", Napi::Number::New(env, extra));
  return r;
}

// sendMsg(fd, buf, fds[]) -> bytes written. The fds stay owned by the caller.
Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Array arr = info[2].As<Napi::Array>();
  uint32_t nfds = arr.Length();
  if (nfds > kMaxFds) {
    ThrowArg(env, "sendMsg: too many fds");
    return env.Undefined();
  }
  iovec iov{buf.Data(), buf.Length()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    for (uint32_t i = 0; i < nfds; i++) {
      int v = arr.Get(i).As<Napi::Number>().Int32Value();
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &v, sizeof(int));
    }
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    ThrowErrno(env, "sendmsg", errno);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// close(fd): only fds this environment owns; anything else is EBADF (a bug to surface).
Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (!GetState(env)->CloseFd(fd)) ThrowErrno(env, "close", EBADF, "fd not owned by the addon");
  return env.Undefined();
}

// ownedFds() -> number of fds the addon currently owns (leak checks in tests).
Napi::Value OwnedFds(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(GetState(info.Env())->fds.size()));
}

// A unix datagram address; a leading '@' names the abstract namespace (as sd_notify reads
// NOTIFY_SOCKET). Returns the address length, 0 when the path does not fit.
socklen_t DgramAddr(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) return 0;
  std::memcpy(addr->sun_path, path.data(), path.size());
  if (path[0] == '@') addr->sun_path[0] = 0;
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                (path[0] == '@' ? 0 : 1));
}

// datagramSend(path, buf): one datagram to a unix datagram socket (systemd's NOTIFY_SOCKET).
Napi::Value DatagramSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  sockaddr_un addr;
  socklen_t alen = DgramAddr(path, &addr);
  if (!alen) {
    ThrowErrno(env, "sendto", ENAMETOOLONG, path);
    return env.Undefined();
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return env.Undefined();
  }
  ssize_t n =
      sendto(fd, buf.Data(), buf.Length(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), alen);
  int err = errno;
  close(fd);
  if (n < 0) ThrowErrno(env, "sendto", err, path);
  return env.Undefined();
}

// datagramBind(path) -> fd: a non-blocking unix datagram socket bound to path (a test's
// notify socket); read it with fdRead.
Napi::Value DatagramBind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  socklen_t alen = DgramAddr(path, &addr);
  if (!alen) {
    ThrowErrno(env, "bind", ENAMETOOLONG, path);
    return env.Undefined();
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return env.Undefined();
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), alen) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "bind", err, path);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("datagramSend", Napi::Function::New<DatagramSend>(env));
  exports.Set("datagramBind", Napi::Function::New<DatagramBind>(env));
  exports.Set("unixListen", Napi::Function::New<UnixListen>(env));
  exports.Set("adoptUnixFd", Napi::Function::New<AdoptUnixFd>(env));
  exports.Set("unixAccept", Napi::Function::New<UnixAccept>(env));
  exports.Set("unixConnect", Napi::Function::New<UnixConnect>(env));
  exports.Set("socketPair", Napi::Function::New<SocketPair>(env));
  exports.Set("recvMsg", Napi::Function::New<RecvMsg>(env));
  exports.Set("sendMsg", Napi::Function::New<SendMsg>(env));
  exports.Set("close", Napi::Function::New<Close>(env));
  exports.Set("ownedFds", Napi::Function::New<OwnedFds>(env));
}

}  // namespace vun
