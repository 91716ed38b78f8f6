// Reading numbers out of N-API values for the control-plane calls (the TS side has already
// validated types: src/native.ts declares every argument).
#pragma once

#include <napi.h>

#include <cstdint>

namespace vun {

// A bigint argument as u64 (guest addresses, feature masks).
inline uint64_t BigU64(const Napi::Value& v) {
  bool lossless;
  return v.As<Napi::BigInt>().Uint64Value(&lossless);
}

inline uint32_t U32(const Napi::Value& v) {
  return v.As<Napi::Number>().Uint32Value();
}

}  // namespace vun
