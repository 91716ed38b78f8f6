// Each part of the native surface registers its functions here; src/native.ts types them.
#pragma once

#include <napi.h>

namespace vun {
void InitSockets(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitEventfd(Napi::Env env, Napi::Object exports);
void InitHost(Napi::Env env, Napi::Object exports);
void InitNetDevice(Napi::Env env, Napi::Object exports);
void InitTestSurface(Napi::Env env, Napi::Object exports);
void InitMachineCosts(Napi::Env env, Napi::Object exports);
}  // namespace vun
