// The fault room of one queue pair: everything a fault plan adds to the data path, behind a
// few named hooks the pair calls. A pair without a plan holds no room (a null pointer, one
// check per event); with one, each hook says what to do and the pair does it:
//
//   ChainPopped   a transmitq chain was popped        -> its lies (an event), or null
//   Arriving      a frame for the guest, before place  -> drop/hold it, or place (a changed copy)
//   Leaving       a guest frame, before the host port  -> drop/hold it, or send (copies, a copy)
//   Used          a used element is about to be written -> withhold, or the id/len told (x2)
//   Placed        a frame for the guest was placed     -> num_buffers and used element told
//   Interrupt     a notification is about to go out    -> now, held back, or later; a storm
//   Publish       a burst's used entries, before flush -> now, or wait for used-burst's batch
//   ReleaseDue    the pair's timer or pass             -> held frames and late interrupts due
//
// A fault is a lie told to the guest: the device's own state (which chains are in flight, the
// ring positions) stays the truth. src/faults/pair-faults.ts is the TS twin, hook for hook.
#pragma once

#include <cstdint>
#include <vector>

#include "device_config.h"
#include "frame_hold.h"
#include "lies.h"
#include "ring_types.h"
#include "vring.h"

namespace vun {

// Directions of a pair: 0 the receiveq (toGuest), 1 the transmitq (fromGuest).
enum Direction : int { kToGuest = 0, kFromGuest = 1 };

class PairFaults {
 public:
  PairFaults(DeviceConfig& cfg, uint32_t pair);

  // Takes the pair's rules and fault logs from the device config (on each Setup).
  void Attach();
  // Whether direction d has rules, or frames held: it cannot take a short path.
  bool Busy(int d) const { return rules_[d] != nullptr || hold_[d].size() != 0; }
  // No rule, nothing held or owed: the pair may drop its room.
  bool Idle() const;

  // What to do with a frame, from Arriving and Leaving.
  struct Frame {
    bool go = true;                 // false: dropped or held (counted here)
    uint32_t copies = 1;            // 2 with duplicate
    const uint8_t* data = nullptr;  // a changed copy to use instead (corrupt, header, runt)
    uint32_t len = 0;
  };
  // The used element(s) told for a chain: `count` elements (0 withheld, 2 repeated) of `id`.
  struct UsedLie {
    uint32_t count = 1;
    uint32_t id = 0;
    uint32_t len = 0;
    bool wrongWrap = false;  // used-wrap: the element is flagged for the other wrap counter
  };
  // What Placed tells: num_buffers (-1: the truth), and the first chain's used element again.
  struct PlacedLie {
    int32_t numBuffers = -1;
    bool rewrite = false;  // fill the first chain's used element again with id/len
    bool twice = false;    // a second used element (id, the true len)
    uint32_t id = 0;
    uint32_t len = 0;
    bool wrongWrap = false;  // used-wrap, for the first chain's used element
  };

  // Inline: a plan without rules for this vring costs one test per event.
  Lies* ChainPopped(uint16_t head) { return rules_[kFromGuest] ? TakeChain(head) : nullptr; }
  // A frame for the guest: takes the event's lies (or keeps those of a frame that waited for
  // buffers); *lies is null when the receiveq has no rules. `again`: a duplicate or a released
  // held frame, whose lies were told already.
  Frame Arriving(Lies** lies, const uint8_t* frame, uint32_t len, bool again);
  Frame Leaving(Lies* lies, const Element& e) {
    return lies || hold_[kFromGuest].size() ? Leave(lies, e) : Frame{};
  }
  // After a guest frame left `sent` times (duplicate) or was not sent: its lies recorded.
  void Left(const Lies& l, uint16_t head, uint32_t sent);
  UsedLie Used(int d, const Lies& l, Vring& ring, uint16_t head, uint32_t len);
  PlacedLie Placed(Lies& l, Vring& ring, uint16_t head, uint32_t taken, uint32_t firstLen);
  // A duplicate frame for the guest was placed too.
  void Duplicated(const Lies& l);

  // The ring's notification decision (NeedNotify) for direction d as the plan changes it: false
  // when held back (notify-drop: the ring forgets it decided) or deferred (notify-delay).
  bool Interrupt(int d, Vring& ring);
  // notify-storm: interrupts owed with nothing behind them (taken: the caller sends them).
  // Paced (paceUs): none now; ReleaseDue sends them one at a time.
  uint32_t TakeStorm(int d) {
    if (stormPaceNs_[d]) {
      if (stormN_[d] && stormAtNs_[d] == FrameHold::kNever)
        stormAtNs_[d] = MonotonicNs() + stormPaceNs_[d];
      return 0;
    }
    const uint32_t n = stormN_[d];
    stormN_[d] = 0;
    stormAtNs_[d] = FrameHold::kNever;  // an unpaced rule took what a paced one still owed
    return n;
  }
  // used-burst: the used entries written and not published yet, and whether `filled` entries
  // publish now (else they wait for the batch).
  uint16_t Waiting(int d) const { return heldUsed_[d]; }
  bool Publish(int d, uint16_t filled);
  // A stop: the batch publishes whatever waits (returned: the entries to flush).
  uint16_t Stop(int d);

  // Held frames, deferred interrupts and bounded batches: the earliest due (kNever: none).
  int64_t NextNs() const;
  // Releases what is due at `now`: toGuest(frame, len) returns false to keep a frame (no guest
  // buffer yet), fromGuest(frame, len) sends one; interrupt(d) sends a deferred interrupt;
  // publish(d, n) publishes the n used entries of a batch whose holdMs ran out. Each direction
  // only when `live[d]`.
  template <class T, class F, class I, class P>
  void ReleaseDue(int64_t now, const bool live[2], T&& toGuest, F&& fromGuest, I&& interrupt,
                  P&& publish) {
    if (live[kFromGuest] && hold_[kFromGuest].NextNs() <= now)
      hold_[kFromGuest].Release(now, [&](const uint8_t* f, uint32_t len) {
        fromGuest(f, len);
        return true;
      });
    if (live[kToGuest] && hold_[kToGuest].NextNs() <= now) hold_[kToGuest].Release(now, toGuest);
    for (int d = 0; d < 2; d++) {
      if (live[d] && burstDueNs_[d] <= now) publish(d, Stop(d));
      if (stormAtNs_[d] <= now && stormN_[d]) {
        // A paced storm: one interrupt now, the next a pace later (a late timer sends one, not
        // a catch-up run QEMU would read as one).
        stormN_[d]--;
        stormAtNs_[d] = stormN_[d] ? now + stormPaceNs_[d] : FrameHold::kNever;
        if (live[d]) interrupt(d);
      }
      if (notifyAtNs_[d] > now) continue;
      notifyAtNs_[d] = FrameHold::kNever;
      interrupt(d);
    }
  }

 private:
  uint32_t VringOf(int d) const { return 2 * pair_ + d; }
  void Take(int d, Lies* l);
  Lies* TakeChain(uint16_t head);
  Frame Leave(Lies* lies, const Element& e);
  void Record(int d, int32_t rule, uint8_t action, uint8_t field, uint32_t ringIdx, uint64_t event,
              uint64_t oldValue, uint64_t newValue);
  uint32_t LieFrame(Lies& l, const uint8_t* frame, uint32_t len);
  // The used element told for chain `head` with `len` bytes written (lies recorded).
  UsedLie Told(int d, const Lies& l, Vring& ring, uint16_t head, uint32_t len);
  void RecordFrameLies(int d, const Lies& l);
  void TakeNotifyLies(int d, const Lies& l, uint32_t head);
  // Holds a frame with its lies (delay, rate, reorder), twice with duplicate; recorded.
  void Hold(int d, Lies& l, const uint8_t* frame, uint32_t len, uint32_t ringIdx);
  void HoldOne(int d, const Lies& l, const uint8_t* frame, uint32_t len);

  DeviceConfig& cfg_;
  const uint32_t pair_;
  VringFaults* rules_[2] = {nullptr, nullptr};  // null: no rule for that vring
  VringObserver* log_[2] = {nullptr, nullptr};  // the fault log, or null
  Lies lies_[2];
  std::vector<uint8_t> copy_;    // a guest frame copied out of its chain
  std::vector<uint8_t> lieBuf_;  // a frame changed by a lie (corrupt, header, runt)
  FrameHold hold_[2];            // delay, rate, reorder
  // Per direction: used-burst's batch size for the burst in progress and the used elements
  // written but not published; notify-storm's extra interrupts; notify-delay's delay for this
  // burst and the time a deferred interrupt is due.
  uint32_t burstN_[2] = {0, 0};
  uint16_t heldUsed_[2] = {0, 0};
  int64_t burstHoldNs_[2] = {0, 0};  // used-burst's holdMs, and when the waiting batch is due
  int64_t burstDueNs_[2] = {FrameHold::kNever, FrameHold::kNever};
  uint32_t stormN_[2] = {0, 0};
  int64_t stormPaceNs_[2] = {0, 0};  // notify-storm's paceUs, and when its next interrupt is due
  int64_t stormAtNs_[2] = {FrameHold::kNever, FrameHold::kNever};
  int64_t notifyDelayNs_[2] = {0, 0};
  int64_t notifyAtNs_[2] = {FrameHold::kNever, FrameHold::kNever};
};

}  // namespace vun
