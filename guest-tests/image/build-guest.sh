#!/usr/bin/env bash
# Builds the test guest from Debian packages: the cloud kernel (modules for virtio-net) and a
# busybox initramfs with ethtool, iperf3 and ip. Cached by kernel version and this script's hash.
# Usage: build-guest.sh OUTDIR   -> OUTDIR/vmlinuz, OUTDIR/initramfs.cgz, OUTDIR/kernel-version
set -euo pipefail
out=${1:?usage: build-guest.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"

need() { command -v "$1" >/dev/null || { echo "build-guest: $1 missing (Debian $2)" >&2; exit 1; }; }
need busybox busybox-static
need iperf3 iperf3
need ethtool ethtool

need xz xz-utils
need ping iputils-ping

pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -qq >/dev/null
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
[ -n "$pkg" ] || { echo "build-guest: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
stamp="$pkg $(sha256sum "$here/build-guest.sh" "$here/init" | sha256sum | cut -c1-16)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cgz" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "build-guest: apt-get download $pkg failed" >&2; exit 1; }
dpkg -x "$work"/*.deb "$work/k"
kver=${pkg#linux-image-}
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz"

root="$work/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,lib/modules,usr/bin,usr/sbin,run,var}
cp "$(command -v busybox)" "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done

# virtio-net and its dependencies, in load order (the .deb ships no modules.dep).
mods="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
for m in $mods; do
  f=$(find "$work/k/lib/modules/$kver" -name "$m.ko*" | head -1)
  if [ -z "$f" ]; then
    # Built into the kernel: nothing to load.
    continue
  fi
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done
echo "$mods" > "$root/lib/modules/order"

# Real ethtool, iperf3 and ip (busybox's ip lacks some options) with their libraries.
copy_bin() {
  local b; b=$(command -v "$1")
  cp "$b" "$root/usr/bin/"
  ldd "$b" | awk '/=>/{print $3} /^\s*\/lib/{print $1}' | while read -r lib; do
    [ -n "$lib" ] && [ -f "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_bin ethtool
copy_bin iperf3
copy_bin ip
copy_bin ping
for ld in /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2; do
  [ -f "$ld" ] && { mkdir -p "$root$(dirname "$ld")"; cp -L "$ld" "$root$ld"; }
done
rm -f "$root/bin/ip" # the real one in /usr/bin wins
cp "$here/init" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -6 > "$out/initramfs.cgz")
echo "$kver" > "$out/kernel-version"
echo "$stamp" > "$out/stamp"
echo "build-guest: $kver, initramfs $(du -h "$out/initramfs.cgz" | cut -f1)"
