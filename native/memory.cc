// Guest memory mappings: mmap of region fds at an offset, with the whole range checked against
// the file first, and memfd_create for the mock front-end's guest RAM.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "env_state.h"
#include "errors.h"
#include "exports.h"
#include "memory_fault.h"

namespace vun {
namespace {

bool GetSize(const Napi::Env& env, const Napi::Value& v, const char* what, uint64_t* out) {
  if (!v.IsNumber()) {
    ThrowArg(env, std::string(what) + " must be a number");
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowArg(env, std::string(what) + " must be a safe non-negative integer");
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

// memfdCreate(name, size) -> fd
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  uint64_t size;
  if (!GetSize(env, info[1], "size", &size)) return env.Undefined();
  // memfdCreate(name, size, {sealable}): sealable memfds can take seals (QEMU's are sealed).
  const bool sealable = info.Length() > 2 && info[2].IsObject() &&
                        info[2].As<Napi::Object>().Get("sealable").ToBoolean();
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0));
  if (fd < 0) {
    ThrowErrno(env, "memfd_create", errno);
    return env.Undefined();
  }
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "ftruncate", err);
    return env.Undefined();
  }
  GetState(env)->OwnFd(fd);
  return Napi::Number::New(env, fd);
}

// fileSeals(fd) -> the fd's seals (F_GET_SEALS: F_SEAL_SEAL 1, SHRINK 2, GROW 4, WRITE 8), or
// -1 when the file cannot carry seals (not a memfd or shmem file). A region whose file is not
// sealed against shrinking can be cut short by the front-end after we mapped it.
Napi::Value FileSeals(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  int seals = fcntl(fd, F_GET_SEALS);
  return Napi::Number::New(info.Env(), seals < 0 ? -1 : seals);
}

// addSeals(fd, seals): F_ADD_SEALS (tests seal memfds as QEMU does).
Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fcntl(fd, F_ADD_SEALS, info[1].As<Napi::Number>().Int32Value()) != 0)
    ThrowErrno(env, "fcntl(F_ADD_SEALS)", errno);
  return env.Undefined();
}

// mmapFd(fd, size, offset) -> mapping id. Maps [offset, offset+size) of fd shared and
// read-write. For regular files and memfds the range must lie inside the file: mapping past
// its end would turn the guest's later accesses into SIGBUS.
Napi::Value MmapFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint64_t size, offset;
  if (!GetSize(env, info[1], "size", &size) || !GetSize(env, info[2], "offset", &offset))
    return env.Undefined();
  if (size == 0) {
    ThrowErrno(env, "mmap", EINVAL, "zero-size region");
    return env.Undefined();
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    ThrowErrno(env, "fstat", errno);
    return env.Undefined();
  }
  if (S_ISREG(sb.st_mode) && (offset > static_cast<uint64_t>(sb.st_size) ||
                              size > static_cast<uint64_t>(sb.st_size) - offset)) {
    ThrowErrno(env, "mmap", EINVAL,
               "region [offset " + std::to_string(offset) + ", size " + std::to_string(size) +
                   ") outside file of " + std::to_string(sb.st_size) + " bytes");
    return env.Undefined();
  }
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t aligned = offset & ~(page - 1);
  uint64_t delta = offset - aligned;
  if (size > SIZE_MAX - delta) {
    ThrowErrno(env, "mmap", EOVERFLOW);
    return env.Undefined();
  }
  size_t length = static_cast<size_t>(size + delta);
  void* p =
      mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(aligned));
  if (p == MAP_FAILED) {
    ThrowErrno(env, "mmap", errno);
    return env.Undefined();
  }
  GuestRangeAdd(p, length);  // a SIGBUS in here is contained (memory_fault.h)
  EnvState* st = GetState(env);
  uint32_t id = st->nextMappingId++;
  Mapping m;
  m.base = p;
  m.length = length;
  m.delta = static_cast<size_t>(delta);
  m.size = static_cast<size_t>(size);
  st->mappings.emplace(id, std::move(m));
  return Napi::Number::New(env, id);
}

void DetachBuffers(napi_env env, Mapping& m) {
  for (napi_ref ref : m.buffers) {
    napi_value v = nullptr;
    if (napi_get_reference_value(env, ref, &v) == napi_ok && v) {
      bool detached = false;
      napi_is_detached_arraybuffer(env, v, &detached);
      if (!detached) napi_detach_arraybuffer(env, v);
    }
    napi_delete_reference(env, ref);
  }
  m.buffers.clear();
}

// munmap(id): unmaps and detaches every ArrayBuffer that viewed the mapping.
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  EnvState* st = GetState(env);
  auto it = st->mappings.find(id);
  if (it == st->mappings.end()) {
    ThrowErrno(env, "munmap", EINVAL, "unknown mapping " + std::to_string(id));
    return env.Undefined();
  }
  DetachBuffers(env, it->second);
  GuestRangeRemove(it->second.base);
  munmap(it->second.base, it->second.length);
  st->mappings.erase(it);
  return env.Undefined();
}

// mappingBuffer(id) -> ArrayBuffer over the caller's bytes of the mapping. It is detached
// (length 0) when the mapping goes away, so JS can never touch unmapped memory.
Napi::Value MappingBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  EnvState* st = GetState(env);
  auto it = st->mappings.find(id);
  if (it == st->mappings.end()) {
    ThrowErrno(env, "mappingBuffer", EINVAL, "unknown mapping " + std::to_string(id));
    return env.Undefined();
  }
  Mapping& m = it->second;
  // mappingBuffer(id, offset, length): a window (JS views are limited to 4 GiB; a region may
  // be larger).
  uint64_t off = 0, len = m.size;
  if (info.Length() > 1) {
    if (!GetSize(env, info[1], "offset", &off) || !GetSize(env, info[2], "length", &len))
      return env.Undefined();
    if (off > m.size || len > m.size - off) {
      ThrowErrno(env, "mappingBuffer", EINVAL, "window outside the mapping");
      return env.Undefined();
    }
  }
  napi_value ab;
  napi_status s = napi_create_external_arraybuffer(env, static_cast<char*>(m.base) + m.delta + off,
                                                   len, nullptr, nullptr, &ab);
  if (s != napi_ok) {
    // V8 refuses some sizes (its own RangeError is then pending: let it through, never throw
    // a second exception over it, which is fatal).
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending)
      ThrowErrno(env, "napi_create_external_arraybuffer", ENOMEM,
                 "cannot view " + std::to_string(len) + " bytes of a mapping from JS");
    return env.Undefined();
  }
  napi_ref ref;
  napi_create_reference(env, ab, 0, &ref);
  m.buffers.push_back(ref);
  return Napi::Value(env, ab);
}

// truncateFile(fd, size): ftruncate. Tests shrink a memfd under running rings with it, as a
// hostile front-end would.
Napi::Value TruncateFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint64_t size;
  if (!GetSize(env, info[1], "size", &size)) return env.Undefined();
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) ThrowErrno(env, "ftruncate", errno);
  return env.Undefined();
}

// memoryFaults() -> SIGBUS faults on guest memory contained so far (memory_fault.h).
Napi::Value MemoryFaults(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(MemoryFaultCount()));
}

// memoryFaultScope(vring | -1) -> the previous vring: which vring the JS thread's guest
// memory accesses belong to (the TS data plane), for faults to be charged to it.
Napi::Value MemoryFaultScopeJs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(),
                           SetMemoryFaultVring(info[0].As<Napi::Number>().Int32Value()));
}

// takeMemoryFault(vring) -> whether `vring` faulted on the JS thread since the last call.
Napi::Value TakeMemoryFaultJs(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), TakeMemoryFault(info[0].As<Napi::Number>().Uint32Value()));
}

// mappingU16(id, offset) -> the little-endian u16 at byte `offset` of the mapping (a ring
// index the control plane looks at when a ring starts), read once; no ArrayBuffer is made.
Napi::Value MappingU16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  uint64_t off;
  if (!GetSize(env, info[1], "offset", &off)) return env.Undefined();
  auto it = GetState(env)->mappings.find(id);
  if (it == GetState(env)->mappings.end() || off > it->second.size || it->second.size - off < 2) {
    ThrowErrno(env, "mappingU16", EINVAL, "unknown mapping or offset outside it");
    return env.Undefined();
  }
  const uint8_t* p = static_cast<uint8_t*>(it->second.base) + it->second.delta + off;
  uint16_t v;
  if (reinterpret_cast<uintptr_t>(p) % 2 == 0) {
    // A ring index (used->idx, avail->idx): acquire pairs with the release-store of whoever
    // published it last (a device thread before a restart, or the driver).
    v = __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);
  } else {
    std::memcpy(&v, p, 2);
  }
  return Napi::Number::New(env, v);
}

// mappingCount() -> number of live mappings (leak checks in tests).
Napi::Value MappingCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(GetState(info.Env())->mappings.size()));
}

}  // namespace

void UnmapAll(napi_env env, EnvState* st) {
  for (auto& kv : st->mappings) {
    DetachBuffers(env, kv.second);
    GuestRangeRemove(kv.second.base);
    munmap(kv.second.base, kv.second.length);
  }
  st->mappings.clear();
}

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New<MemfdCreate>(env));
  exports.Set("mmapFd", Napi::Function::New<MmapFd>(env));
  exports.Set("fileSeals", Napi::Function::New<FileSeals>(env));
  exports.Set("addSeals", Napi::Function::New<AddSeals>(env));
  exports.Set("munmap", Napi::Function::New<Munmap>(env));
  exports.Set("mappingBuffer", Napi::Function::New<MappingBuffer>(env));
  exports.Set("mappingCount", Napi::Function::New<MappingCount>(env));
  exports.Set("mappingU16", Napi::Function::New<MappingU16>(env));
  exports.Set("truncateFile", Napi::Function::New<TruncateFile>(env));
  exports.Set("memoryFaults", Napi::Function::New<MemoryFaults>(env));
  exports.Set("memoryFaultScope", Napi::Function::New<MemoryFaultScopeJs>(env));
  exports.Set("takeMemoryFault", Napi::Function::New<TakeMemoryFaultJs>(env));
  InstallMemoryFaultHandler();
}

}  // namespace vun
