// The one place errno becomes a JS error: {code: 'ENOENT', errno: 2, syscall: 'connect'}.
// src/native.ts turns these into coded HostIoError objects.
#pragma once

#include <napi.h>

#include <cerrno>
#include <string>

namespace vun {

const char* ErrnoName(int err);

// Throws a JS Error for errno `err` raised by `syscall`; callers return right after.
void ThrowErrno(const Napi::Env& env, const char* syscall, int err, const std::string& detail = "");

// Throws a JS TypeError with code ERR_INVALID_ARG (bad arguments from our own TS code).
void ThrowArg(const Napi::Env& env, const std::string& message);

}  // namespace vun
