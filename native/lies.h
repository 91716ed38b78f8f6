// What the faults of one event make the device do: the vocabulary between the fault room
// (pair_faults.h) and the queue pair. src/faults/lies.ts has the same record.
#pragma once

#include <cstdint>

#include "faults.h"

namespace vun {

// What the faults of one event make the device do, collected when the event is taken
// (VringFaults::Next) and recorded when each part is applied. Rule indexes, -1: not asked.
struct Lies {
  bool pending = false;  // receiveq: decided for the frame in progress, not applied yet
  uint64_t event = 0;
  int32_t drop = -1, duplicate = -1, corrupt = -1, withhold = -1, runt = -1;
  int32_t usedLen = -1, usedId = -1, descRewrite = -1;
  int32_t usedWrap = -1;  // packed rings: the used descriptor flagged for the other wrap counter
  uint8_t dropAction = kFaultDrop;  // drop or loss-gilbert
  // delay, rate, reorder: the frame is held and leaves later (frame_hold.h).
  int32_t delay = -1, rate = -1, reorder = -1;
  int64_t delayNs = 0;
  FaultRule* rateRule = nullptr;  // its link state
  int32_t gap = 0;
  bool Holds() const { return delay >= 0 || rate >= 0 || reorder >= 0; }
  // The rules behind this event's lies, each once, in a fixed order (the capture's note;
  // src/faults/lies.ts rulesOf lists them the same way).
  uint32_t Rules(uint16_t* out, uint32_t max) const {
    const int32_t all[] = {drop,      duplicate,   corrupt,     runt,      header[0], header[1],
                           header[2], header[3],   header[4],   header[5], header[6], usedLen,
                           usedId,    descRewrite, withhold,    delay,     rate,      reorder,
                           usedBurst, storm,       notifyDelay, usedWrap};
    uint32_t n = 0;
    for (int32_t r : all) {
      if (r < 0 || n >= max) continue;
      bool seen = false;
      for (uint32_t i = 0; i < n; i++) seen |= out[i] == r;
      if (!seen) out[n++] = static_cast<uint16_t>(r);
    }
    return n;
  }
  // used-burst: this chain's used element waits until `burstN` are written, then all publish.
  int32_t usedBurst = -1;
  uint32_t burstN = 0;
  int64_t burstHoldNs = 0;  // ... or until they have waited this long (0: no bound)
  // notify-storm: `stormN` more interrupts after this burst's; notify-delay: its interrupt late.
  int32_t storm = -1, notifyDelay = -1;
  uint32_t stormN = 0;
  int64_t stormPaceNs = 0;  // paced: one every stormPaceNs (0: all at once)
  int64_t notifyDelayNs = 0;
  uint8_t descField = 0;  // kFieldAddr, kFieldLen or kFieldFlags
  uint64_t descValue = 0;
  bool AboutUsed() const {
    return usedLen >= 0 || usedId >= 0 || descRewrite >= 0 || usedWrap >= 0;
  }
  bool Twice() const { return usedId >= 0 && idMode == kIdRepeat; }  // used-id "repeat"
  uint8_t corruptBit = 0, lenMode = 0, idMode = 0;
  uint64_t lenValue = 0, idValue = 0;
  int32_t header[7] = {-1, -1, -1, -1, -1, -1, -1};  // rule per plan.ts HEADER_FIELDS index
  uint64_t headerValue[7] = {};
  // What LieFrame changed, recorded once the frame is delivered (it may wait for buffers).
  uint64_t headerOld[7] = {};
  uint8_t byteOld = 0, byteNew = 0;
  uint32_t runtFrom = 0, runtTo = 0;
  bool ChangesFrame() const {
    if (corrupt >= 0 || runt >= 0) return true;
    for (int f = 0; f < 6; f++)  // num_buffers (6) is written after delivery
      if (header[f] >= 0) return true;
    return false;
  }
};

}  // namespace vun
