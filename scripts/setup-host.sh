#!/usr/bin/env bash
# Installs the Debian 12 packages vhost-user-net's build, demo and tests use, when missing.
# Needs root to install; without root it names what is missing and fails.
set -euo pipefail

packages=(
  g++ make python3          # native addon (node-gyp)
  qemu-system-x86 ipxe-qemu # real QEMU front-end; iPXE drives virtio-net without a guest kernel
  dpdk-dev                  # dpdk-testpmd: an independent vhost-user front-end
  iproute2                  # network namespaces, veth, TAP set-up
  busybox-static iperf3 ethtool iputils-ping xz-utils  # the test guest's initramfs (and host ends)
  clang-format              # C++ formatting check (npm run lint)
  chromium fonts-dejavu-core # renders the live ring page in the ring page test
  tshark                    # reads our pcapng captures back (capture tests)
  socat                     # vhost-user-net guest forwards the ring page; the lab's guest shell (learn-virtio.md)
  systemd                   # systemd-socket-activate: socket activation without a running systemd
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu  # the libvirt guest test (its own libvirtd)
  clang-19 libclang-rt-19-dev # libFuzzer + ASan/UBSan for the native fuzz targets (npm run fuzz)
  liburing-dev              # io_uring, measured against writev for TAP writes (npm run bench)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host: missing Debian packages: ${missing[*]}" >&2
  echo "setup-host: run as root (or: apt-get install ${missing[*]})" >&2
  exit 1
fi

echo "setup-host: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-host: done"
