// Fuzz target: the flow parser behind Toeplitz (rss.h) over any frame: the hash input of
// Ethernet (one VLAN tag), IPv4 (fragments, options) and IPv6 with TCP/UDP ports, its reverse,
// and the queue pair RSS picks. Checked: no read outside the frame (ASan), an input length
// that matches its hash type, reversing twice gives the input back, the pair comes from the
// table.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "../rss.h"
#include "fuzz_check.h"

using namespace vun;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  RssConfig c;
  std::vector<uint8_t> key = in.ConsumeBytes<uint8_t>(40);
  key.resize(40);
  std::memcpy(c.key, key.data(), 40);
  c.tableSize = in.ConsumeIntegralInRange<uint32_t>(1, 128);
  for (uint32_t i = 0; i < 128; i++) c.table[i] = uint16_t(i % 4);
  // The frame in a buffer of exactly its length, so ASan sees any read past its end.
  std::vector<uint8_t> bytes = in.ConsumeRemainingBytes<uint8_t>();
  std::unique_ptr<uint8_t[]> frame(new uint8_t[bytes.size()]);
  if (!bytes.empty()) std::memcpy(frame.get(), bytes.data(), bytes.size());
  uint8_t out[36];
  HashType t;
  size_t n = FlowInput(frame.get(), bytes.size(), out, &t);
  const size_t want[] = {0, 8, 12, 12, 32, 36, 36};
  Check(t <= kHashUdpv6 && n == want[t], "input length matches the hash type");
  if (n) {
    uint8_t r[36];
    std::memcpy(r, out, n);
    ReverseFlowInput(r, n);
    ReverseFlowInput(r, n);
    Check(std::memcmp(r, out, n) == 0, "reversing twice is the identity");
    Toeplitz(c.key, sizeof(c.key), out, n);
  }
  uint32_t h = 0;
  uint32_t pair = RssPair(c, frame.get(), bytes.size(), &h);
  Check(pair < 4 && (n == 0 ? pair == 0 : pair == c.table[h % c.tableSize]),
        "the pair comes from the table");
  return 0;
}
