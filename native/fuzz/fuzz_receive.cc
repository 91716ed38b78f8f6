// Fuzz target: the receive scatter (queue_pair_receive.cc Deliver) through a real QueuePair on
// the loopback port. The guest posts receive chains of 1 to 4 buffers of any length (crossing
// a region edge), transmits frames of any header and length, sometimes writes anywhere (racing
// the device), and the device runs passes (Work). Features from the input: MRG_RXBUF on or
// off, VERSION_1 (12- or 10-byte header), GUEST_CSUM, EVENT_IDX.
// Checked after every pass, for each used element the device published: its id is a chain the
// guest posted and not yet used, its length fits the chain; the chains of one frame number
// num_buffers (1 without MRG_RXBUF); the bytes they hold are a frame the guest sent, in order
// (drops allowed), its header as sent but for flags and num_buffers. ASan checks every copy
// stays inside guest memory.
//
// fuzz-sources: queue_pair.cc queue_pair_receive.cc pair_faults.cc
// fuzz-sources: steering.cc host_port.cc memory_fault.cc
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <vector>

#include "../net_rules.h"
#include "../queue_pair.h"
#include "fuzz_check.h"

using namespace vun;

namespace {
constexpr uint64_t kRegion = 32 * 1024;
constexpr uint64_t kVa = 0x7f0000000000ull;
constexpr uint16_t kNum = 64;
// Guest layout (GPAs): receiveq rings, transmitq rings, frames sent, receive buffers (these
// cross the edge between the two regions at 32 KiB).
constexpr uint64_t kRxDesc = 0x0, kRxAvail = 0x400, kRxUsed = 0x800;
constexpr uint64_t kTxDesc = 0x1000, kTxAvail = 0x1400, kTxUsed = 0x1800;
constexpr uint64_t kTxArea = 0x2000, kTxEnd = 0x6000;
constexpr uint64_t kRxArea = 0x6000, kRxEnd = 2 * kRegion;

struct NoEvents : DeviceEvents {
  void VringBroken(uint32_t, uint32_t) override {}
  void PinFailed(uint32_t, int, int) override {}
};

struct Guest {
  std::vector<uint8_t> a = std::vector<uint8_t>(kRegion), b = std::vector<uint8_t>(kRegion);
  uint8_t* At(uint64_t gpa) { return gpa < kRegion ? &a[gpa] : &b[gpa - kRegion]; }
  // Copies split at the region edge (memcpy: the fuzzer's comparison hooks stay out of it).
  void Write(uint64_t gpa, const uint8_t* p, size_t n) {
    const size_t first = gpa < kRegion ? std::min<size_t>(n, kRegion - gpa) : 0;
    if (first) std::memcpy(&a[gpa], p, first);
    if (n > first) std::memcpy(At(gpa + first), p + first, n - first);
  }
  void Read(uint64_t gpa, uint8_t* p, size_t n) {
    const size_t first = gpa < kRegion ? std::min<size_t>(n, kRegion - gpa) : 0;
    if (first) std::memcpy(p, &a[gpa], first);
    if (n > first) std::memcpy(p + first, At(gpa + first), n - first);
  }
  uint16_t U16(uint64_t gpa) { return uint16_t(*At(gpa) | (*At(gpa + 1) << 8)); }
  uint32_t U32(uint64_t gpa) { return U16(gpa) | (uint32_t(U16(gpa + 2)) << 16); }
  void Put16(uint64_t gpa, uint16_t v) {
    const uint8_t p[2] = {uint8_t(v), uint8_t(v >> 8)};
    Write(gpa, p, 2);
  }
  void Desc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
            uint16_t next) {
    uint8_t d[16];
    std::memcpy(d, &addr, 8);
    std::memcpy(d + 8, &len, 4);
    std::memcpy(d + 12, &flags, 2);
    std::memcpy(d + 14, &next, 2);
    Write(table + 16 * i, d, 16);
  }
};

struct Chain {
  std::vector<std::pair<uint64_t, uint32_t>> bufs;  // (gpa, len)
  uint64_t cap = 0;
  bool used = false;
};

struct Sent {
  std::vector<uint8_t> hdr, payload;
};

}  // namespace

// The device is built once (building a queue pair per input would be most of the time); each
// input starts it afresh over zeroed guest memory, and ends with a stop (Teardown).
struct Device {
  Guest g;
  DeviceConfig cfg{1};
  std::vector<uint64_t> counters = std::vector<uint64_t>(2 * kCountersPerVring);
  Steering steering{1};
  NoEvents events;
  QueuePair qp{cfg, steering, events, 0};
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  Device() {
    cfg.counters = counters.data();
    cfg.mem.regions.push_back(GuestRegion{0, kRegion, kVa, g.a.data()});
    cfg.mem.regions.push_back(GuestRegion{kRegion, kRegion, kVa + kRegion, g.b.data()});
    qp.SetPort(MakeHostPort(HostKind::kLoopback, -1, 0));
  }
};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Device* dev = new Device();
  FuzzedDataProvider in(data, size);
  Guest& g = dev->g;
  std::memset(g.a.data(), 0, kRegion);
  std::memset(g.b.data(), 0, kRegion);
  uint64_t f = 0;
  if (in.ConsumeBool()) f |= uint64_t(1) << kFMrgRxbuf;
  if (in.ConsumeBool()) f |= uint64_t(1) << kFVersion1;
  if (in.ConsumeBool()) f |= uint64_t(1) << kFGuestCsum;
  if (in.ConsumeBool()) f |= uint64_t(1) << kFEventIdx;
  const bool mrg = HasFeature(f, kFMrgRxbuf);

  DeviceConfig& cfg = dev->cfg;
  cfg.features = f;
  cfg.hdrLen = HeaderLen(f);
  const uint32_t hdr = cfg.hdrLen;
  const uint64_t areas[2][3] = {{kRxDesc, kRxAvail, kRxUsed}, {kTxDesc, kTxAvail, kTxUsed}};
  for (int v = 0; v < 2; v++) {
    QueueState& q = cfg.queues[v];
    q = QueueState{};
    q.cfg.num = kNum;
    q.cfg.descVa = kVa + areas[v][0];
    q.cfg.availVa = kVa + areas[v][1];
    q.cfg.usedVa = kVa + areas[v][2];
    q.cfg.eventIdx = HasFeature(f, kFEventIdx);
    q.started = q.enabled = true;
  }
  QueuePair& qp = dev->qp;
  qp.Setup(dev->epfd, 0);

  std::map<uint16_t, Chain> chains;  // receive chains by head
  std::deque<Sent> sent;             // frames sent and not yet seen (or dropped)
  uint16_t rxDesc = 0, rxAvail = 0, rxSeen = 0, txDesc = 0, txAvail = 0, txSeen = 0;
  uint64_t rxNext = kRxArea, txNext = kTxArea;
  bool tainted = false;  // the guest wrote over something: contents are no longer checked
  // The frame being assembled from used elements: chains left, bytes so far.
  uint32_t left = 0;
  std::vector<uint8_t> got;

  auto checkUsed = [&] {
    const uint16_t txIdx = g.U16(kTxUsed + 2);
    for (; txSeen != txIdx; txSeen++) {
      const uint64_t e = kTxUsed + 4 + 8 * (txSeen % kNum);
      if (!tainted) Check(g.U32(e) < txDesc && g.U32(e + 4) == 0, "transmitq used: a head, len 0");
    }
    const uint16_t rxIdx = g.U16(kRxUsed + 2);
    for (; rxSeen != rxIdx; rxSeen++) {
      const uint64_t e = kRxUsed + 4 + 8 * (rxSeen % kNum);
      const uint32_t id = g.U32(e), len = g.U32(e + 4);
      if (tainted) continue;
      auto it = chains.find(static_cast<uint16_t>(id));
      Check(it != chains.end() && !it->second.used, "receiveq used: a chain posted, once");
      Chain& c = it->second;
      c.used = true;
      Check(len <= c.cap, "receiveq used: len fits the chain");
      std::vector<uint8_t> bytes(len);
      uint32_t have = 0;
      for (auto [gpa, n] : c.bufs) {
        const uint32_t take = std::min(n, len - have);
        g.Read(gpa, bytes.data() + have, take);
        have += take;
      }
      if (left == 0) {
        Check(len >= hdr, "the first chain of a frame holds its header");
        left = hdr == 12 ? uint32_t(bytes[10] | (bytes[11] << 8)) : 1;
        Check(left >= 1, "num_buffers is at least 1");
        if (!mrg) Check(left == 1, "without MRG_RXBUF a frame is one chain");
        got.clear();
      }
      got.insert(got.end(), bytes.begin(), bytes.end());
      if (--left > 0) continue;
      // A whole frame: the next one sent that matches (those before it were dropped).
      bool found = false;
      while (!sent.empty() && !found) {
        const Sent& s = sent.front();
        found = got.size() == hdr + s.payload.size() &&
                std::memcmp(got.data() + 1, s.hdr.data() + 1, 9) == 0 &&
                std::memcmp(got.data() + hdr, s.payload.data(), s.payload.size()) == 0;
        sent.pop_front();
      }
      Check(found, "a delivered frame is one the guest sent, in order");
    }
  };

  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
      case 1:
      case 2: {  // post a receive chain of 1 to 4 writable buffers
        const uint32_t k = in.ConsumeIntegralInRange<uint32_t>(1, 4);
        if (rxDesc + k > kNum) break;
        Chain c;
        const uint16_t head = rxDesc;
        for (uint32_t i = 0; i < k; i++) {
          uint32_t len = in.ConsumeIntegralInRange<uint32_t>(1, 2048);
          if (rxNext + len > kRxEnd) len = static_cast<uint32_t>(kRxEnd - rxNext);
          if (len == 0) break;
          const uint16_t flags = 2 /* WRITE */ | (i + 1 < k ? 1 /* NEXT */ : 0);
          g.Desc(kRxDesc, rxDesc, rxNext, len, flags, uint16_t(rxDesc + 1));
          c.bufs.push_back({rxNext, len});
          c.cap += len;
          rxNext += len;
          rxDesc++;
        }
        if (c.bufs.empty()) break;
        // The last descriptor written ends the chain.
        g.Desc(kRxDesc, uint16_t(rxDesc - 1), c.bufs.back().first, c.bufs.back().second, 2, 0);
        chains[head] = c;
        g.Put16(kRxAvail + 4 + 2 * (rxAvail % kNum), head);
        g.Put16(kRxAvail + 2, ++rxAvail);
        break;
      }
      case 3:
      case 4:
      case 5: {  // transmit a frame: header (flags, gso_type, the rest) and payload
        if (txDesc + 2 > kNum) break;
        Sent s;
        s.hdr.assign(hdr, 0);
        if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
          std::vector<uint8_t> h = in.ConsumeBytes<uint8_t>(10);
          for (size_t i = 0; i < h.size(); i++) s.hdr[i] = h[i];
        }
        const size_t len = in.ConsumeBool() ? in.ConsumeIntegralInRange<size_t>(14, 1514)
                                            : in.ConsumeIntegralInRange<size_t>(1, 6000);
        if (txNext + hdr + len > kTxEnd) break;
        s.payload.resize(len);
        const uint8_t seed = in.ConsumeIntegral<uint8_t>();
        for (size_t i = 0; i < len; i++) s.payload[i] = uint8_t(seed + i * 7);
        const uint64_t at = txNext;
        g.Write(at, s.hdr.data(), hdr);
        g.Write(at + hdr, s.payload.data(), len);
        txNext += hdr + len;
        const uint32_t total = static_cast<uint32_t>(hdr + len);
        const uint32_t cut = in.ConsumeIntegralInRange<uint32_t>(0, total - 1);
        const uint16_t head = txDesc;
        if (cut == 0) {
          g.Desc(kTxDesc, txDesc++, at, total, 0, 0);
        } else {
          g.Desc(kTxDesc, txDesc, at, cut, 1 /* NEXT */, uint16_t(txDesc + 1));
          txDesc++;
          g.Desc(kTxDesc, txDesc++, at + cut, total - cut, 0, 0);
        }
        g.Put16(kTxAvail + 4 + 2 * (txAvail % kNum), head);
        g.Put16(kTxAvail + 2, ++txAvail);
        sent.push_back(std::move(s));
        break;
      }
      case 6:
      case 7:
      case 8:  // a device pass
        qp.Work();
        checkUsed();
        break;
      case 9: {  // the guest writes anywhere (racing the device)
        const uint64_t at = in.ConsumeIntegralInRange<uint64_t>(0, 2 * kRegion - 1);
        std::vector<uint8_t> bytes =
            in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 8));
        for (size_t i = 0; i < bytes.size() && at + i < 2 * kRegion; i++) *g.At(at + i) = bytes[i];
        tainted = true;
        break;
      }
    }
  }
  qp.Work();
  qp.Teardown();
  checkUsed();
  return 0;
}
