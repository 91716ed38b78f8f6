#!/usr/bin/env bash
# Builds the guest's user space from Debian packages: a busybox initramfs with ethtool, iperf3,
# ip and ping, and no kernel modules (each kernel's come from fetch-kernel.sh or pack-modules.sh
# as a second cpio archive). Cached by this script's and init's hash.
# Usage: build-guest.sh OUTDIR   -> OUTDIR/initramfs.cgz
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

stamp="$(sha256sum "$here/build-guest.sh" "$here/init" | sha256sum | cut -c1-16)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/initramfs.cgz" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,lib/modules,usr/bin,usr/sbin,run,var}
cp "$(command -v busybox)" "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done

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
echo "$stamp" > "$out/stamp"
echo "build-guest: initramfs $(du -h "$out/initramfs.cgz" | cut -f1)" >&2
