// Per-environment state of the addon: every fd and mapping it hands out is recorded here, so
// that the environment cleanup hook can close and unmap whatever JS did not (worker exit,
// process teardown). No other mutable state exists in the addon.
#pragma once

#include <napi.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace vun {

class Poller;
class NetDevice;

struct Mapping {
  void* base = nullptr;           // what mmap returned (page aligned)
  size_t length = 0;              // what was mapped
  size_t delta = 0;               // offset of the caller's first byte inside the mapping
  size_t size = 0;                // the caller's length
  std::vector<napi_ref> buffers;  // weak refs to ArrayBuffers viewing it, detached on unmap
};

struct EnvState {
  uv_loop_t* loop = nullptr;
  std::unordered_set<int> fds;
  std::unordered_map<uint32_t, Mapping> mappings;
  uint32_t nextMappingId = 1;
  std::unordered_set<Poller*> pollers;
  // Data-plane devices: their threads are stopped before any mapping goes away.
  std::unordered_set<NetDevice*> devices;
  Napi::FunctionReference pollerCtor;

  void OwnFd(int fd) { fds.insert(fd); }
  // Closes fd if this environment owns it; returns false (and closes nothing) otherwise.
  bool CloseFd(int fd);
  void Cleanup(napi_env env);
};

EnvState* GetState(const Napi::Env& env);

}  // namespace vun
