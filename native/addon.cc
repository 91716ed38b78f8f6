// Module entry: per-environment state, its cleanup hook, and the exports of every part.
#include <napi.h>
#include <unistd.h>

#include "env_state.h"
#include "exports.h"
#include "net_device.h"
#include "poller.h"

namespace vun {

void UnmapAll(napi_env env, EnvState* st);

bool EnvState::CloseFd(int fd) {
  if (fds.erase(fd) == 0) return false;
  close(fd);
  return true;
}

void EnvState::Cleanup(napi_env env) {
  // Copy: Poller::Close() erases itself from the set.
  std::vector<NetDevice*> devs(devices.begin(), devices.end());
  for (NetDevice* d : devs) d->Shutdown();
  std::vector<Poller*> open(pollers.begin(), pollers.end());
  for (Poller* p : open) p->Close();
  UnmapAll(env, this);
  for (int fd : fds) close(fd);
  fds.clear();
}

EnvState* GetState(const Napi::Env& env) {
  return env.GetInstanceData<EnvState>();
}

static void CleanupHook(void* arg) {
  auto* pair = static_cast<std::pair<napi_env, EnvState*>*>(arg);
  pair->second->Cleanup(pair->first);
  delete pair;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* st = new EnvState();
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  st->loop = loop;
  // Instance data is deleted after cleanup hooks run, so the hook may still use it.
  env.SetInstanceData<EnvState>(st);
  napi_add_env_cleanup_hook(env, CleanupHook, new std::pair<napi_env, EnvState*>(env, st));

  InitSockets(env, exports);
  InitMemory(env, exports);
  InitEventfd(env, exports);
  InitHost(env, exports);
  InitNetDevice(env, exports);
  InitTestSurface(env, exports);
  InitMachineCosts(env, exports);
  Napi::Function poller = Poller::Init(env);
  st->pollerCtor = Napi::Persistent(poller);
  exports.Set("Poller", poller);
  exports.Set("abiVersion", Napi::Number::New(env, 1));
#ifdef VUN_SANITIZED
  // The sanitizers this build runs under (npm run test:asan checks it loaded this one).
  exports.Set("sanitizers", Napi::String::New(env, VUN_SANITIZED));
#else
  exports.Set("sanitizers", Napi::String::New(env, ""));
#endif
  return exports;
}

}  // namespace vun

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return vun::Init(env, exports);
}

NODE_API_MODULE(vhost_user_net, InitModule)
