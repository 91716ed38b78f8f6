// Poller: fd readiness on the calling environment's own libuv loop (uv_poll_t). Used by the
// control plane only (one callback per vhost-user message, accept or kick), never per packet.
#pragma once

#include <napi.h>
#include <uv.h>

namespace vun {

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Poller(const Napi::CallbackInfo& info);
  ~Poller() override;

  // Stops polling and releases the uv handle; safe to call twice (cleanup hook, then GC).
  void Close();

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value CloseJs(const Napi::CallbackInfo& info);
  static void OnPoll(uv_poll_t* handle, int status, int events);

  napi_env env_ = nullptr;
  uv_poll_t* handle_ = nullptr;  // freed in the uv_close callback
  Napi::FunctionReference callback_;
  napi_async_context asyncContext_ = nullptr;
  bool active_ = false;
  bool closed_ = false;
};

}  // namespace vun
