#!/usr/bin/env bash
# The virtio-net modules of one kernel as a cpio archive for the guest's init: lib/modules/NAME.ko
# (decompressed) and lib/modules/order. A module the kernel has built in is simply absent.
# Usage: pack-modules.sh MODULES-DIR OUT.cgz   (MODULES-DIR: any tree holding the .ko files)
set -euo pipefail
src=${1:?usage: pack-modules.sh MODULES-DIR OUT.cgz}
dst=${2:?usage: pack-modules.sh MODULES-DIR OUT.cgz}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib/modules"
# In load order (virtio needs virtio_ring; the .deb ships no modules.dep and init retries in
# passes anyway, but a failed insmod is a warning on the console).
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
for m in $mods; do
  f=$(find "$src" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" 2>/dev/null | head -1)
  [ -n "$f" ] || continue
  case "$f" in
    *.xz) xz -dc "$f" > "$work/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$work/lib/modules/$m.ko" ;;
    *.gz) gzip -dc "$f" > "$work/lib/modules/$m.ko" ;;
    *) cp "$f" "$work/lib/modules/$m.ko" ;;
  esac
done
echo "$mods" > "$work/lib/modules/order"
(cd "$work" && find lib | busybox cpio -o -H newc 2>/dev/null | gzip -6 > "$dst.tmp")
mv "$dst.tmp" "$dst"
