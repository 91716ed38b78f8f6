// Fault plans as the data path applies them: a flat rule table per vring, compiled in TS
// (src/faults/plan.ts) and handed over while the vring's thread is stopped. Whether rule r fires
// on event e of vring v depends only on (seed, r, v, e): Draw is a hash of those numbers, not a
// running generator, so bursts, threads and timing never change a decision (time windows
// aside). src/faults/plan.ts has the same Draw and trigger; a test holds them together.
#pragma once

#include <time.h>

#include <cstdint>
#include <vector>

namespace vun {

// Codes of src/faults/plan.ts VRING_ACTIONS.
enum FaultAction : uint8_t {
  kFaultDrop = 1,
  kFaultDuplicate = 2,
  kFaultCorrupt = 3,
  kFaultUsedLen = 4,
  kFaultUsedId = 5,
  kFaultWithhold = 6,
  kFaultHeader = 7,
  kFaultRunt = 8,
  kFaultNotifyDrop = 9,
  kFaultDescRewrite = 10,
  kFaultDelay = 11,
  kFaultRate = 12,
  kFaultReorder = 13,
  kFaultLossGilbert = 14,
  kFaultUsedBurst = 15,
  kFaultNotifyStorm = 16,
  kFaultNotifyDelay = 17,
  kFaultUsedWrap = 18,
};
// Field codes of a fault record: plan.ts HEADER_FIELDS indexes (0-6), then these
// (src/faults/plan.ts FIELD_NAMES); kFieldNone: the fault changed no value.
constexpr uint8_t kFieldLen = 7, kFieldId = 8, kFieldByte = 9, kFieldAddr = 10, kFieldFlags = 11,
                  kFieldDelayUs = 15, kFieldNone = 0xff;
// A fault record's ringIdx when no descriptor was involved.
constexpr uint32_t kNoRing = 0xffffffffu;

// used-len modes, used-id modes (0: an exact id in `value`).
enum : uint8_t { kLenPlus = 1, kLenMinus = 2, kLenSet = 3 };
enum : uint8_t { kIdOutOfRange = 1, kIdNotAHead = 2, kIdRepeat = 3 };

struct FaultRule {
  uint16_t rule = 0;  // index in the plan
  uint8_t action = 0;
  uint8_t mode = 0;
  uint8_t field = 0;  // header: HEADER_FIELDS index; desc-rewrite: kFieldAddr/Len/Flags
  bool always = true;
  uint64_t every = 1, after = 0, count = 0;  // count 0: no limit
  uint64_t threshold = 0;                    // fires when Draw() < threshold (unless always)
  int64_t atNs = -1, untilNs = -1;           // window from session start; -1: none
  uint64_t value = 0;                        // delay: ns; rate: bit/s; reorder: the gap in frames
  uint64_t fired = 0;
  // delay: jitter (ns) and its distribution (mode 0 uniform, 1 normal).
  uint64_t jitterNs = 0;
  // used-burst: how long written entries may wait for the batch (0: until it is full).
  int64_t holdNs = 0;
  // notify-storm: one interrupt every paceNs instead of all at once (0: at once).
  int64_t paceNs = 0;
  // loss-gilbert: the chances (as u64 thresholds) of good->bad (p), bad->good (r), and of a
  // frame getting through in the bad (h) and good (k) states; the state, per vring.
  uint64_t gP = 0, gR = 0, gH = 0, gK = 0;
  bool gBad = false;
  // rate: when the emulated link is free again (CLOCK_MONOTONIC ns).
  int64_t linkFreeNs = 0;
};

// splitmix64's finalizer: a bijection of u64 that scatters every input bit.
inline uint64_t Mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t Draw(uint32_t seed, uint32_t rule, uint32_t vring, uint64_t event) {
  uint64_t h = Mix64(uint64_t(seed) + 0x9e3779b97f4a7c15ull * (uint64_t(rule) + 1));
  h = Mix64(h ^ vring);
  return Mix64(h ^ event);
}

inline int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The rules of one vring and its event count. Only the thread that owns the vring touches it;
// the JS thread replaces it while that thread is stopped.
class VringFaults {
 public:
  uint32_t seed = 0;
  uint32_t vring = 0;
  int64_t startNs = 0;  // session start (CLOCK_MONOTONIC)
  std::vector<FaultRule> rules;
  uint64_t events = 0;  // events seen on this vring (chains popped / frames for the guest)

  bool Any() const { return !rules.empty(); }

  // Whether `r` applies to event `e` (0-based) at time `now` (ns since session start): after,
  // every, count and the window; Fires adds the probability.
  bool Gated(const FaultRule& r, uint64_t e, int64_t now) const {
    if (e < r.after || (e - r.after + 1) % r.every != 0) return false;
    if (r.count && r.fired >= r.count) return false;
    if (r.atNs >= 0 && (now < r.atNs || (r.untilNs >= 0 && now >= r.untilNs))) return false;
    return true;
  }
  bool Fires(const FaultRule& r, uint64_t e, int64_t now) const {
    return Gated(r, e, now) && (r.always || Draw(seed, r.rule, vring, e) < r.threshold);
  }

  // loss-gilbert (Gilbert-Elliott): whether event e is lost in the current state, then the
  // state's move. Two draws of the rule's stream per event: loss, transition.
  bool GilbertLoses(FaultRule& r, uint64_t e) const {
    const uint64_t d = Draw(seed, r.rule, vring, e);
    const bool lost = Mix64(d) >= (r.gBad ? r.gH : r.gK);
    r.gBad = r.gBad ? !(d < r.gR) : d < r.gP;
    return lost;
  }

  // Takes the next event; calls fn(rule, event) for each event rule that fires, in plan order.
  template <class F>
  void Next(F&& fn) {
    const uint64_t e = events++;
    const int64_t now = MonotonicNs() - startNs;
    for (FaultRule& r : rules) {
      if (r.action == kFaultNotifyDrop) continue;
      if (r.action == kFaultLossGilbert) {
        if (!Gated(r, e, now) || !GilbertLoses(r, e)) continue;
      } else if (!Fires(r, e, now)) {
        continue;
      }
      r.fired++;
      fn(r, e);
    }
  }

  // notify-drop: the rule whose window holds interrupts back now, or null. Not an event.
  FaultRule* NotifyDropped() {
    const int64_t now = MonotonicNs() - startNs;
    for (FaultRule& r : rules) {
      if (r.action != kFaultNotifyDrop) continue;
      if (now >= r.atNs && (r.untilNs < 0 || now < r.untilNs) && (!r.count || r.fired < r.count))
        return &r;
    }
    return nullptr;
  }
};

}  // namespace vun
