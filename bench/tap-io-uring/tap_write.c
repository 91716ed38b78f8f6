// What a TAP write costs: one writev per frame (what TapPort does) against the same writevs
// queued to io_uring and submitted once per burst (one io_uring_enter for BURST frames).
// Usage: tap_write writev|uring BURST SECONDS FRAME_BYTES   (as root, in a netns you made)
// The TAP (vun-uring0, vnet header on, as ours) is addressed 10.99.0.1/24; each frame is an
// IPv4 UDP datagram to 10.99.0.2, so the kernel takes it through the IP stack as it would
// a guest's. Prints one line of JSON: frames, seconds, process CPU seconds, write errors.
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double Now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double CpuSeconds(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec +
         r.ru_stime.tv_usec / 1e6;
}

// An Ethernet + IPv4 + UDP frame of `bytes` bytes, 10.99.0.1 -> 10.99.0.2.
static void BuildFrame(unsigned char* f, int bytes) {
  memset(f, 0, (size_t)bytes);
  memset(f, 0xff, 6);  // broadcast: the TAP accepts it whatever its address
  f[6] = 0x02, f[11] = 0x01;
  f[12] = 0x08, f[13] = 0x00;
  unsigned char* ip = f + 14;
  const int ipLen = bytes - 14;
  ip[0] = 0x45, ip[2] = (unsigned char)(ipLen >> 8), ip[3] = (unsigned char)ipLen;
  ip[6] = 0x40, ip[8] = 64, ip[9] = 17;
  ip[12] = 10, ip[13] = 99, ip[15] = 1, ip[16] = 10, ip[17] = 99, ip[19] = 2;
  unsigned sum = 0;
  for (int i = 0; i < 20; i += 2) sum += (unsigned)(ip[i] << 8 | ip[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  sum = ~sum & 0xffff;
  ip[10] = (unsigned char)(sum >> 8), ip[11] = (unsigned char)sum;
  unsigned char* udp = ip + 20;
  udp[0] = 0x30, udp[1] = 0x39, udp[2] = 0x30, udp[3] = 0x39;  // port 12345 both ways
  udp[4] = (unsigned char)((ipLen - 20) >> 8), udp[5] = (unsigned char)(ipLen - 20);
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: tap_write writev|uring BURST SECONDS FRAME_BYTES\n");
    return 2;
  }
  const int uring = strcmp(argv[1], "uring") == 0;
  const int burst = atoi(argv[2]);
  const double seconds = atof(argv[3]);
  const int bytes = atoi(argv[4]);
  if (burst < 1 || burst > 256 || bytes < 60 || bytes > 9000) return 2;

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "vun-uring0");
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
    perror("tap");
    return 1;
  }
  int hdrLen = 12;  // virtio_net_hdr_v1, as with VERSION_1 or MRG_RXBUF
  ioctl(fd, TUNSETVNETHDRSZ, &hdrLen);
  if (system("ip link set vun-uring0 up && ip addr add 10.99.0.1/24 dev vun-uring0") != 0) return 1;

  static unsigned char hdr[12], frame[9000];
  BuildFrame(frame, bytes);
  struct iovec iov[2] = {{hdr, sizeof hdr}, {frame, (size_t)bytes}};
  struct io_uring ring;
  if (uring && io_uring_queue_init(256, &ring, 0) < 0) {
    perror("io_uring_queue_init");
    return 1;
  }

  long frames = 0, errors = 0;
  const double t0 = Now(), c0 = CpuSeconds();
  while (Now() - t0 < seconds) {
    for (int rep = 0; rep < 64; rep++) {
      if (!uring) {
        for (int i = 0; i < burst; i++)
          if (writev(fd, iov, 2) < 0) errors++;
      } else {
        for (int i = 0; i < burst; i++)
          io_uring_prep_writev(io_uring_get_sqe(&ring), fd, iov, 2, 0);
        io_uring_submit_and_wait(&ring, (unsigned)burst);
        struct io_uring_cqe* cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
          if (cqe->res < 0) errors++;
          seen++;
        }
        io_uring_cq_advance(&ring, seen);
      }
      frames += burst;
    }
  }
  printf("{\"frames\":%ld,\"seconds\":%.6f,\"cpuSeconds\":%.6f,\"errors\":%ld}\n", frames,
         Now() - t0, CpuSeconds() - c0, errors);
  return 0;
}
