#include "poller.h"

#include "env_state.h"
#include "errors.h"

namespace vun {

Napi::Function Poller::Init(Napi::Env env) {
  return DefineClass(
      env, "Poller",
      {InstanceMethod<&Poller::Start>("start"), InstanceMethod<&Poller::Stop>("stop"),
       InstanceMethod<&Poller::CloseJs>("close")});
}

// new Poller(fd, callback(status, events)); status < 0 is a libuv error code.
Poller::Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
    ThrowArg(env, "Poller(fd, callback)");
    return;
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  EnvState* st = GetState(env);
  handle_ = new uv_poll_t;
  int rc = uv_poll_init(st->loop, handle_, fd);
  if (rc != 0) {
    delete handle_;
    handle_ = nullptr;
    closed_ = true;
    ThrowErrno(env, "uv_poll_init", -rc);
    return;
  }
  handle_->data = this;
  callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  napi_value name = Napi::String::New(env, "vhost-user-net:poller");
  napi_async_init(env, nullptr, name, &asyncContext_);
  st->pollers.insert(this);
}

Poller::~Poller() {
  Close();
}

void Poller::Close() {
  if (closed_) return;
  closed_ = true;
  if (active_) {
    active_ = false;
    Unref();
  }
  if (handle_) {
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }
  if (asyncContext_) {
    napi_async_destroy(env_, asyncContext_);
    asyncContext_ = nullptr;
  }
  // The callback is never called again: let it go. A strong reference kept here is a GC root,
  // and the callback usually reaches this poller's own JS object (a connection holds its
  // poller): the whole graph would never be collected (a session leaked per connection).
  callback_.Reset();
  EnvState* st = GetState(Napi::Env(env_));
  if (st) st->pollers.erase(this);
}

// start(events): 1 = readable, 2 = writable. While started the JS object is kept alive.
Napi::Value Poller::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) {
    ThrowErrno(env, "uv_poll_start", EBADF, "poller closed");
    return env.Undefined();
  }
  int events = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : UV_READABLE;
  int rc = uv_poll_start(handle_, events & (UV_READABLE | UV_WRITABLE), OnPoll);
  if (rc != 0) {
    ThrowErrno(env, "uv_poll_start", -rc);
    return env.Undefined();
  }
  if (!active_) {
    active_ = true;
    Ref();
  }
  return env.Undefined();
}

Napi::Value Poller::Stop(const Napi::CallbackInfo& info) {
  if (!closed_ && handle_) uv_poll_stop(handle_);
  if (active_) {
    active_ = false;
    Unref();
  }
  return info.Env().Undefined();
}

Napi::Value Poller::CloseJs(const Napi::CallbackInfo& info) {
  Close();
  return info.Env().Undefined();
}

void Poller::OnPoll(uv_poll_t* handle, int status, int events) {
  auto* self = static_cast<Poller*>(handle->data);
  if (!self || self->closed_) return;
  Napi::Env env(self->env_);
  Napi::HandleScope scope(env);
  napi_value args[2] = {Napi::Number::New(env, status), Napi::Number::New(env, events)};
  napi_value result;
  napi_status rc = napi_make_callback(env, self->asyncContext_, self->Value(),
                                      self->callback_.Value(), 2, args, &result);
  if (rc == napi_pending_exception) {
    // A throwing callback is a bug in our TS code: hand it to Node as an uncaught exception.
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

}  // namespace vun
