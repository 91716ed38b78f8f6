// The host side of one queue pair: where a frame the guest sent goes (fromGuest) and where a
// frame for the guest comes from (toGuest). One small class per kind of host backend; the queue
// pair never asks which kind it has.
#pragma once

#include <cstdint>
#include <memory>

#include "ring_types.h"

namespace vun {

enum class HostKind : uint32_t { kNull = 0, kLoopback = 1, kTap = 2, kAfPacket = 3 };

class HostPort {
 public:
  virtual ~HostPort() = default;

  enum class Sent {
    kOk,      // handed to the host
    kFailed,  // the host refused it (counted as a host error)
    kTooBig,  // larger than the bounce buffer it had to go through
    kLooped,  // copied into `scratch` for the guest's own receiveqs (loopback)
  };
  // Sends the frame in the readable segments of a transmitq chain, as [header][frame].
  // `scratch` (cap bytes) is there for ports that must copy; `*len` is set for kLooped.
  virtual Sent Send(const Element& e, uint32_t hdrLen, uint8_t* scratch, uint32_t cap,
                    uint32_t* len) = 0;
  // Sends a frame the device holds (a changed copy of a chain: fault injection), as Send does.
  virtual Sent SendFrame(const uint8_t* frame, uint32_t len, uint8_t* scratch, uint32_t cap,
                         uint32_t* looped) = 0;
  // Sends what Send and SendFrame queued (a port that batches its system calls); returns how
  // many of those frames the host refused. The queue pair calls it at the end of each transmit
  // burst, before it completes the burst's chains: a queued frame may still be read from them.
  virtual uint32_t Flush() { return 0; }
  // How the last Flush's frames went to the host, for a port with more than one way (a TAP:
  // way 0 plain writes, 1 io_uring) and what they cost, copies included; frames 0: nothing said.
  struct WriteCost {
    uint32_t way = 0;
    uint32_t frames = 0;
    uint64_t ns = 0;
  };
  virtual WriteCost LastWrite() const { return {}; }
  // A frame for the guest as [header (hdrLen)][frame]: where it lies and its length (0: none).
  struct Frame {
    const uint8_t* data = nullptr;
    uint32_t len = 0;
  };
  // The next waiting frame: read into `buf` (cap bytes), or lying in the port's own buffers (a
  // batch read at once), where it stays until the next call.
  virtual Frame Receive(uint8_t* buf, uint32_t cap, uint32_t hdrLen) { return {}; }
  // Whether Receive can ever return a frame.
  virtual bool Produces() const { return false; }
  // The fd that becomes readable when a frame waits, or -1 (a producing port without one is
  // simply asked again on every pass).
  virtual int Fd() const { return -1; }
  // The header size and the offloads (TUN_F_*) the guest accepts, after SET_FEATURES.
  virtual void Configure(uint32_t hdrLen, unsigned offloads) {}
};

// An AF_PACKET receive ring (af-packet:IFACE,rx-ring): TPACKET_V3, kRingBlocks blocks of
// kRingBlock bytes, each handed to the reader when full or kRingTimeoutMs after its first frame
// (the kernel's tick rounds that up). afPacketOpen sets it up; the port maps and reads it.
struct AfPacketRing {
  static constexpr uint32_t kRingBlock = 1u << 17;  // a 64 KiB GSO frame fits
  static constexpr uint32_t kRingBlocks = 16;
  static constexpr uint32_t kRingTimeoutMs = 1;
  static constexpr size_t Bytes() { return size_t(kRingBlock) * kRingBlocks; }
};

// setHost flags.
constexpr uint32_t kHostTapIoUring = 1;  // a TAP port may write a burst through io_uring
constexpr uint32_t kHostTapChoose = 2;  // ... when that costs less per frame here (write_chooser.h)

// The port of one queue pair: `fd` is its TAP queue or AF_PACKET socket (-1 for the others);
// `sourceLen` > 0 makes a null port offer broadcast frames of that length (null:source=LEN).
std::unique_ptr<HostPort> MakeHostPort(HostKind kind, int fd, uint32_t sourceLen,
                                       uint32_t flags = 0);

// The largest frame a pair's buffers take: a 64 KiB GSO frame and its virtio-net header.
constexpr uint32_t kMaxFrameBytes = 65536 + 12 + 16;

// Copies the readable segments of `e` into dst; UINT32_MAX when they exceed cap.
uint32_t CopyChainOut(const Element& e, uint8_t* dst, uint32_t cap);

}  // namespace vun
