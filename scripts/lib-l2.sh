# The Linux guest (L2) of the Linux tier and the demo (sourced, not run).
#
# l2_build WORKDIR DESTDIR
#   Needs nested_prepare (scripts/lib-nested.sh) and bin/petrel. Writes
#   DESTDIR/l2-initrd.cpio (busybox, tools/pcibar, the kernel's virtio,
#   virtio_net (with failover, net_failover), uio and uio_pci_generic
#   modules, scripts/e2e-guest-init.sh as /init) and
#   DESTDIR/root.qcow2 (the same files as an ext4 root, made by mkfs.ext4 -d
#   and converted by petrel img). WORKDIR holds the tree.
# Kernel modules of L2's drivers, as paths under the kernel package's
# lib/modules/VERSION/kernel, in the order they load.
L2_VIRTIO_MODS="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci"
L2_BLK_MODS="$L2_VIRTIO_MODS drivers/block/virtio_blk"
L2_NET_MODS="$L2_VIRTIO_MODS net/core/failover drivers/net/net_failover drivers/net/virtio_net"

# l2_modules DEST PATH...: copies the modules (paths as in L2_*_MODS) into
# DEST.
l2_modules() {
  local dest=$1 m
  shift
  mkdir -p "$dest"
  for m in "$@"; do
    cp "$NESTED_MODDIR/kernel/$m.ko" "$dest/" || return 1
  done
}

# l2_module_names PATH...: the modules' names, in the same order (what
# insmod /modules/NAME.ko takes).
l2_module_names() {
  local m
  for m in "$@"; do printf '%s ' "${m##*/}"; done
}

l2_build() {
  local w=$1 dest=$2 m tree=$1/tree
  rm -rf "$tree"
  mkdir -p "$dest" "$tree"/{bin,lib/petrel,etc,proc,sys,dev,tmp,mnt,newroot}
  CGO_ENABLED=0 go build -o "$tree/bin/pcibar" ./tools/pcibar || return 1
  cp "$NESTED_BUSYBOX" "$tree/bin/busybox"
  # shellcheck disable=SC2086 # the lists are words
  l2_modules "$tree/lib/petrel" $L2_BLK_MODS drivers/uio/uio drivers/uio/uio_pci_generic \
    net/core/failover drivers/net/net_failover drivers/net/virtio_net || return 1
  install -m 755 scripts/e2e-guest-init.sh "$tree/init"
  # The root disk: the tree as an ext4 file system, as qcow2.
  rm -f "$w/root.raw" "$dest/root.qcow2"
  truncate -s 64M "$w/root.raw"
  mkfs.ext4 -q -F -L petrel-root -d "$tree" "$w/root.raw" || return 1
  ./bin/petrel img convert -f raw -O qcow2 "$w/root.raw" "$dest/root.qcow2" || return 1
  rm -f "$w/root.raw"
  # The initramfs: the tree and /etc/initramfs, which makes /init mount
  # root=/dev/vda when the command line names it.
  touch "$tree/etc/initramfs"
  (cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$dest/l2-initrd.cpio"
}
