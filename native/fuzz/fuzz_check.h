// What every fuzz target shares: an invariant that must hold, or the run aborts (libFuzzer keeps
// the input that broke it).
#pragma once

#include <cstdio>
#include <cstdlib>

namespace vun {

inline void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
  }
}

}  // namespace vun
