#!/usr/bin/env bash
# A guest kernel from a Debian package: follows a metapackage (linux-image-cloud-amd64,
# linux-image-6.12-cloud-amd64) to the versioned image, downloads it (never installs it on the
# host) and keeps the bzImage and the virtio-net modules as a cpio archive the guest's init loads.
# Cached by the resolved package and version.
# Usage: fetch-kernel.sh PACKAGE OUTDIR -> OUTDIR/vmlinuz, OUTDIR/modules.cgz, OUTDIR/release,
#        OUTDIR/config (the kernel's build configuration)
set -euo pipefail
pkg=${1:?usage: fetch-kernel.sh PACKAGE OUTDIR}
out=${2:?usage: fetch-kernel.sh PACKAGE OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)

candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/{print $2; exit}'; }
# The metapackage depends on the versioned image (one level today; follow up to three).
name=$pkg
ver=$(candidate "$name")
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
  apt-get update -qq >/dev/null 2>&1 || true
  ver=$(candidate "$name")
fi
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
  echo "fetch-kernel: no package $pkg in the apt sources (apt-cache policy $pkg)" >&2
  exit 3
fi
for _ in 1 2 3; do
  dep=$(apt-cache depends "$name" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  [ -n "$dep" ] || break
  name=$dep
  ver=$(candidate "$name")
done
stamp="$name $ver $(cat "$here/fetch-kernel.sh" "$here/pack-modules.sh" | sha256sum | cut -c1-16)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/modules.cgz" ]; then
  exit 0
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$name=$ver" >/dev/null 2>&1) || {
  echo "fetch-kernel: apt-get download $name=$ver failed" >&2
  exit 3
}
dpkg -x "$work"/*.deb "$work/k"
vmlinuz=$(ls "$work"/k/boot/vmlinuz-* 2>/dev/null | head -1)
[ -n "$vmlinuz" ] || { echo "fetch-kernel: $name has no /boot/vmlinuz-*: not a kernel image package" >&2; exit 3; }
release=${vmlinuz##*/vmlinuz-}
cp "$vmlinuz" "$out/vmlinuz"
cp "$work/k/boot/config-$release" "$out/config" 2>/dev/null || rm -f "$out/config"
bash "$here/pack-modules.sh" "$work/k/lib/modules/$release" "$out/modules.cgz"
echo "$release" > "$out/release"
echo "$stamp" > "$out/stamp"
echo "fetch-kernel: $name $ver ($release)" >&2
