// RSS: the Toeplitz hash over a frame's IPv4/IPv6 TCP/UDP 4-tuple (or 2-tuple), an
// indirection table, and the receiveq it picks. Header-only so a fuzz target can share it.
// The TS reference is src/net/rss.ts; both are checked against the Microsoft RSS vectors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vun {

// Toeplitz hash of `in` under `key` (at least len + 4 bytes of key are used).
inline uint32_t Toeplitz(const uint8_t* key, size_t keyLen, const uint8_t* in, size_t len) {
  uint32_t result = 0;
  // The 32-bit window of the key, slid left one bit per input bit.
  uint32_t window =
      (uint32_t(key[0]) << 24) | (uint32_t(key[1]) << 16) | (uint32_t(key[2]) << 8) | key[3];
  for (size_t i = 0; i < len; i++) {
    uint8_t next = i + 4 < keyLen ? key[i + 4] : 0;
    for (int b = 7; b >= 0; b--) {
      if (in[i] & (1u << b)) result ^= window;
      window = (window << 1) | ((next >> b) & 1);
    }
  }
  return result;
}

enum HashType : uint32_t {
  kHashNone = 0,
  kHashIpv4 = 1,
  kHashTcpv4 = 2,
  kHashUdpv4 = 3,
  kHashIpv6 = 4,
  kHashTcpv6 = 5,
  kHashUdpv6 = 6
};

// The hash input of an Ethernet frame: addresses, then ports for TCP/UDP (not for fragments),
// all in network byte order. Returns its length (0: not IP) and the hash type.
inline size_t FlowInput(const uint8_t* f, size_t len, uint8_t out[36], HashType* type) {
  *type = kHashNone;
  if (len < 14) return 0;
  size_t off = 12;
  uint16_t et = uint16_t(f[off] << 8 | f[off + 1]);
  if ((et == 0x8100 || et == 0x88a8) && len >= 18) {  // one VLAN tag
    off += 4;
    et = uint16_t(f[off] << 8 | f[off + 1]);
  }
  off += 2;
  if (et == 0x0800) {
    if (len < off + 20) return 0;
    size_t ihl = size_t(f[off] & 0x0f) * 4;
    uint8_t proto = f[off + 9];
    bool frag = ((f[off + 6] & 0x3f) | f[off + 7]) != 0;  // MF or an offset
    std::memcpy(out, f + off + 12, 8);
    size_t l4 = off + ihl;
    if (!frag && ihl >= 20 && (proto == 6 || proto == 17) && len >= l4 + 4) {
      std::memcpy(out + 8, f + l4, 4);
      *type = proto == 6 ? kHashTcpv4 : kHashUdpv4;
      return 12;
    }
    *type = kHashIpv4;
    return 8;
  }
  if (et == 0x86dd) {
    if (len < off + 40) return 0;
    uint8_t next = f[off + 6];
    std::memcpy(out, f + off + 8, 32);
    size_t l4 = off + 40;
    if ((next == 6 || next == 17) && len >= l4 + 4) {
      std::memcpy(out + 32, f + l4, 4);
      *type = next == 6 ? kHashTcpv6 : kHashUdpv6;
      return 36;
    }
    *type = kHashIpv6;
    return 32;
  }
  return 0;
}

// The hash input of the reverse direction of the same flow (addresses and ports swapped): what
// a reply to this frame will hash to. Flow affinity records transmitted flows under it.
inline void ReverseFlowInput(uint8_t* in, size_t n) {
  size_t addr = (n == 8 || n == 12) ? 4 : 16;
  uint8_t tmp[16];
  std::memcpy(tmp, in, addr);
  std::memmove(in, in + addr, addr);
  std::memcpy(in + addr, tmp, addr);
  if (n == 12 || n == 36) {
    uint8_t* p = in + 2 * addr;
    uint8_t a = p[0], b = p[1];
    p[0] = p[2];
    p[1] = p[3];
    p[2] = a;
    p[3] = b;
  }
}

struct RssConfig {
  uint8_t key[40];
  uint16_t table[128];  // receiveq pair per hash bucket
  uint32_t tableSize = 128;
};

// The receive queue pair for a frame: table[hash % size]; frames that are not IP go to pair 0.
inline uint32_t RssPair(const RssConfig& c, const uint8_t* frame, size_t len,
                        uint32_t* hashOut = nullptr) {
  uint8_t in[36];
  HashType t;
  size_t n = FlowInput(frame, len, in, &t);
  uint32_t h = n ? Toeplitz(c.key, sizeof(c.key), in, n) : 0;
  if (hashOut) *hashOut = h;
  return n ? c.table[h % c.tableSize] : 0;
}

}  // namespace vun
