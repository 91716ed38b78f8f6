// Observation records a vring's worker writes for JS to drain in bursts (no JS per packet):
// captured frames (--pcap) and ring trace steps (--trace-rings). One ByteRing per vring, so
// the vring's worker is the only producer. src/trace/observe.ts decodes the same layout.
//
// Every record: [u16 type][u16 vring][u32 zero][u64 CLOCK_REALTIME ns] then the body below.
#pragma once

#include <time.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "byte_ring.h"

namespace vun {

enum ObserveType : uint16_t {
  kObsFrame = 1,  // u32 origLen, u16 hdrLen, u8 dir (0 toGuest, 1 fromGuest), u8 0, hdr, frame
  kObsAvail = 2,  // u16 availIdx, u16 lastAvailIdx
  kObsChain =
      3,         // u16 head, u16 ndesc, u16 error, u16 slot, u64 outLen, u64 inLen, ndesc x ObsDesc
  kObsUsed = 4,  // u16 slot, u16 0, u32 id, u32 len
  kObsFlush = 5,     // u16 usedIdx, u16 count
  kObsNotify = 6,    // u8 sent, u8 why, u8 eventIdx, u8 0, u16 usedEvent, newUsed, oldUsed, flags
  kObsKicks = 7,     // u8 enabled, u8 mode (KicksMode), u16 avail_event or off_wrap value
  kObsFault = 8,     // u16 rule, u8 action, u8 field (0xff: none), u32 ringIdx (~0: none),
                     // u64 event, u64 old, u64 new (an injected fault: faults.h)
  kObsCoalesce = 9,  // u8 action (CoalesceAction), u8 mode, u16 frames, u32 microseconds
};

// What interrupt coalescing did with a notification (kObsCoalesce `action`; coalesce.h).
enum CoalesceAction : uint8_t {
  kCoalesceHeld = 0,        // asked for, held; microseconds: until it is due
  kCoalesceJoined = 1,      // asked for while one was held: joined it
  kCoalesceSentIdle = 2,    // sent at once (adaptive: idle); microseconds: since the last one
  kCoalesceSentFrames = 3,  // sent early: `frames` used entries were owed
  kCoalesceSentDue = 4,     // the held one sent at its time
  kCoalesceSentStop = 5,    // the held one sent as the ring stopped
};

// Why a notification was sent or suppressed (kObsNotify `why`).
enum NotifyWhy : uint8_t {
  kWhyFlags = 0,
  kWhyEventIdx = 1,
  kWhyOnEmpty = 2,
  kWhyFirst = 3,
  kWhyPackedFlags = 4,  // packed: the driver event suppression flags decided
  kWhyPackedDesc = 5,   // packed: EVENT_IDX, the driver's event offset and wrap counter
};
// How kicks were asked for or suppressed (kObsKicks `mode`).
enum KicksMode : uint8_t {
  kKicksSplitFlags = 0,   // split: used->flags NO_NOTIFY
  kKicksSplitEvent = 1,   // split: avail_event
  kKicksPackedFlags = 2,  // packed: device event flags ENABLE/DISABLE
  kKicksPackedDesc = 3,   // packed: device event DESC at an offset and wrap counter
};

struct ObsDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
  uint8_t indirect;  // 1: an entry of the indirect table the previous top-level entry points to
  uint8_t packed;    // 1: a packed ring descriptor (`next` holds its buffer id)
  uint8_t pad[6];
};
static_assert(sizeof(ObsDesc) == 24, "ObsDesc layout is shared with src/trace/observe.ts");

constexpr uint32_t kObsHeader = 16;
constexpr uint32_t kObsMaxDescs = 256;  // descriptors kept per chain record (the rest counted)

class VringObserver {
 public:
  VringObserver(uint16_t vring, uint32_t bytes, bool capture, bool trace, uint32_t snapLen,
                bool faults = false)
      : ring(bytes),
        vring_(vring),
        capture(capture),
        trace(trace),
        snapLen(snapLen),
        faults(faults) {
    if (trace) descs.reserve(kObsMaxDescs);
  }
  ByteRing ring;

 private:
  uint16_t vring_;

 public:
  const bool capture;
  const bool trace;
  const uint32_t snapLen;      // frame bytes kept per captured frame (after the virtio-net header)
  const bool faults;           // injected faults are recorded (the fault log)
  std::vector<ObsDesc> descs;  // the chain being walked (trace)
  uint32_t descsSkipped = 0;

  // Starts a record with `body` bytes after the common header; null when the ring is full.
  uint8_t* Begin(uint16_t type, uint32_t body) {
    uint8_t* p = ring.Reserve(kObsHeader + body);
    if (!p) return nullptr;
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    uint32_t zero = 0;
    std::memcpy(p, &type, 2);
    std::memcpy(p + 2, &vring_, 2);
    std::memcpy(p + 4, &zero, 4);
    std::memcpy(p + 8, &ns, 8);
    return p + kObsHeader;
  }

  // A frame as [header][frame] in `parts` (host pointers and lengths, in order).
  template <typename Parts>
  // `rules`: the fault plan's rules that decided this frame's lies (up to 8; the capture's
  // comment names them), appended as u16s after the frame bytes; p[7] holds how many.
  void Frame(uint8_t dir, uint32_t hdrLen, uint64_t total, const Parts& parts, uint32_t nparts,
             const uint8_t* hdrOverride = nullptr, const uint16_t* rules = nullptr,
             uint32_t nrules = 0) {
    if (total < hdrLen) return;
    if (nrules > 8) nrules = 8;
    const uint64_t origLen = total - hdrLen;
    const uint32_t keep = origLen < snapLen ? static_cast<uint32_t>(origLen) : snapLen;
    uint8_t* p = Begin(kObsFrame, 8 + hdrLen + keep + 2 * nrules);
    if (!p) return;
    uint32_t ol = static_cast<uint32_t>(origLen > 0xffffffffull ? 0xffffffffull : origLen);
    uint16_t hl = static_cast<uint16_t>(hdrLen);
    std::memcpy(p, &ol, 4);
    std::memcpy(p + 4, &hl, 2);
    p[6] = dir;
    p[7] = static_cast<uint8_t>(nrules);
    if (nrules) std::memcpy(p + 8 + hdrLen + keep, rules, 2 * nrules);
    uint8_t* dst = p + 8;
    uint32_t want = hdrLen + keep, done = 0;
    for (uint32_t i = 0; i < nparts && done < want; i++) {
      uint32_t n = parts[i].len < want - done ? parts[i].len : want - done;
      std::memcpy(dst + done, parts[i].host, n);
      done += n;
    }
    if (hdrOverride) std::memcpy(dst, hdrOverride, hdrLen);
    ring.Commit();
  }

  void Avail(uint16_t availIdx, uint16_t lastAvailIdx) {
    uint8_t* p = Begin(kObsAvail, 4);
    if (!p) return;
    std::memcpy(p, &availIdx, 2);
    std::memcpy(p + 2, &lastAvailIdx, 2);
    ring.Commit();
  }

  void Desc(uint64_t addr, uint32_t len, uint16_t flags, uint16_t next, bool indirect,
            bool packed = false) {
    if (descs.size() >= kObsMaxDescs) {
      descsSkipped++;
      return;
    }
    ObsDesc d{};
    d.addr = addr;
    d.len = len;
    d.flags = flags;
    d.next = next;
    d.indirect = indirect ? 1 : 0;
    d.packed = packed ? 1 : 0;
    descs.push_back(d);
  }

  // `slot`: a packed ring's position of the chain's first descriptor (0xffff: split ring).
  void Chain(uint16_t head, uint32_t error, uint64_t outLen, uint64_t inLen,
             uint16_t slot = 0xffff) {
    const uint16_t n = static_cast<uint16_t>(descs.size());
    uint8_t* p = Begin(kObsChain, 24 + 24 * uint32_t(n));
    if (p) {
      const uint16_t err16 = static_cast<uint16_t>(error);  // ring errors are small numbers
      std::memcpy(p, &head, 2);
      std::memcpy(p + 2, &n, 2);
      std::memcpy(p + 4, &err16, 2);
      std::memcpy(p + 6, &slot, 2);
      std::memcpy(p + 8, &outLen, 8);
      std::memcpy(p + 16, &inLen, 8);
      if (n) std::memcpy(p + 24, descs.data(), 24 * size_t(n));
      ring.Commit();
    }
    descs.clear();
    descsSkipped = 0;
  }

  void Used(uint16_t slot, uint32_t id, uint32_t len) {
    uint8_t* p = Begin(kObsUsed, 12);
    if (!p) return;
    uint16_t zero = 0;
    std::memcpy(p, &slot, 2);
    std::memcpy(p + 2, &zero, 2);
    std::memcpy(p + 4, &id, 4);
    std::memcpy(p + 8, &len, 4);
    ring.Commit();
  }

  void Flush(uint16_t usedIdx, uint16_t count) {
    uint8_t* p = Begin(kObsFlush, 4);
    if (!p) return;
    std::memcpy(p, &usedIdx, 2);
    std::memcpy(p + 2, &count, 2);
    ring.Commit();
  }

  void Notify(bool sent, NotifyWhy why, bool eventIdx, uint16_t usedEvent, uint16_t newUsed,
              uint16_t oldUsed, uint16_t availFlags) {
    uint8_t* p = Begin(kObsNotify, 12);
    if (!p) return;
    p[0] = sent;
    p[1] = why;
    p[2] = eventIdx;
    p[3] = 0;
    std::memcpy(p + 4, &usedEvent, 2);
    std::memcpy(p + 6, &newUsed, 2);
    std::memcpy(p + 8, &oldUsed, 2);
    std::memcpy(p + 10, &availFlags, 2);
    ring.Commit();
  }

  // An injected fault. `field` 0xff: the fault changed no value (old and new are 0).
  void Fault(uint16_t rule, uint8_t action, uint8_t field, uint32_t ringIdx, uint64_t event,
             uint64_t oldValue, uint64_t newValue) {
    uint8_t* p = Begin(kObsFault, 32);
    if (!p) return;
    std::memcpy(p, &rule, 2);
    p[2] = action;
    p[3] = field;
    std::memcpy(p + 4, &ringIdx, 4);
    std::memcpy(p + 8, &event, 8);
    std::memcpy(p + 16, &oldValue, 8);
    std::memcpy(p + 24, &newValue, 8);
    ring.Commit();
  }

  void Coalesce(CoalesceAction action, uint8_t mode, uint32_t frames, uint64_t us) {
    uint8_t* p = Begin(kObsCoalesce, 8);
    if (!p) return;
    p[0] = action;
    p[1] = mode;
    const uint16_t f = frames > 0xffff ? 0xffff : static_cast<uint16_t>(frames);
    const uint32_t u = us > 0xffffffffu ? 0xffffffffu : static_cast<uint32_t>(us);
    std::memcpy(p + 2, &f, 2);
    std::memcpy(p + 4, &u, 4);
    ring.Commit();
  }

  void Kicks(bool enabled, KicksMode mode, uint16_t value) {
    uint8_t* p = Begin(kObsKicks, 4);
    if (!p) return;
    p[0] = enabled;
    p[1] = mode;
    std::memcpy(p + 2, &value, 2);
    ring.Commit();
  }
};

}  // namespace vun
