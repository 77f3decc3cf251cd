#!/usr/bin/env bash
# Builds out/initramfs.cpio: a u-root v0.16.0 initramfs whose init runs
# tools/initramfs/petrel-init (prints PETREL-INIT-OK, loads the virtio
# modules of the fetched Debian kernel, writes a file on /dev/vda, powers
# off). The u-root commands come from the module in tools/initramfs, whose
# tools.go imports them by package path. Usage: mkinitramfs.sh [KERNEL_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
kroot=${1:-out/kernel/root}
out=out/initramfs.cpio
mkdir -p out/bin
t0=$(date +%s)

if [[ ! -x out/bin/u-root ]]; then
  echo "mkinitramfs: installing u-root v0.16.0" >&2
  (cd tools/initramfs && GOBIN="$root/out/bin" go install github.com/u-root/u-root)
fi

# The virtio modules (virtio_blk and its dependencies, in load order) of the
# kernel package; ext4 is built into Debian's cloud kernel.
files=(-files "tools/initramfs/petrel-init:bin/petrel-init")
moddir=$(ls -d "$kroot"/lib/modules/*/kernel 2>/dev/null | head -n1 || true)
if [[ -n "$moddir" ]]; then
  for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
           drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk; do
    f="$moddir/$m.ko"
    if [[ -f "$f" ]]; then
      files+=(-files "$(realpath "$f"):lib/petrel/$(basename "$f")")
    fi
  done
else
  echo "mkinitramfs: no kernel modules under $kroot (run scripts/fetch-kernel.sh); building without them" >&2
fi

cmds=()
for c in init gosh ls cat mount umount dd sync shutdown echo insmod mkdir dmesg uname sleep; do
  cmds+=("github.com/u-root/u-root/cmds/core/$c")
done
# u-root resolves the files relative to where it runs: give it absolute paths.
abs_files=()
for ((i = 0; i < ${#files[@]}; i += 2)); do
  spec=${files[i+1]}
  src=${spec%%:*}
  dst=${spec#*:}
  [[ "$src" = /* ]] || src="$root/$src"
  abs_files+=(-files "$src:$dst")
done
(cd tools/initramfs && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$root/out/bin/u-root" \
  -o "$root/$out" -defaultsh gosh -uinitcmd /bin/petrel-init "${abs_files[@]}" "${cmds[@]}")
echo "mkinitramfs: $out ($(du -h "$out" | cut -f1)) in $(( $(date +%s) - t0 )) s" >&2
echo "$out"
