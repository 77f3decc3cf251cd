# Shared by e2e.sh, demo.sh and bench-boot.sh (sourced, not run).

# hw_virt says whether KVM here has hardware virtualization (VMX/SVM with
# kvm_intel or kvm_amd) or is kvm_pvm, the software hypervisor, under which
# Linux stops at its int3 self-test.
hw_virt() {
  if grep -qw kvm_pvm /proc/modules 2>/dev/null; then
    return 1
  fi
  grep -Eqw 'vmx|svm' /proc/cpuinfo && grep -Eqw 'kvm_intel|kvm_amd' /proc/modules 2>/dev/null
}

# prepare_boot_files fetches the kernel, builds the initramfs (reused while
# newer than its inputs) and sets KERNEL and INITRD.
prepare_boot_files() {
  KERNEL=$(bash scripts/fetch-kernel.sh)
  INITRD=out/initramfs.cpio
  if [[ ! -s $INITRD || -n $(find tools/initramfs scripts/mkinitramfs.sh -newer "$INITRD" -type f 2>/dev/null) ]]; then
    bash scripts/mkinitramfs.sh >/dev/null
  fi
}

# make_disk PATH: a 64 MiB qcow2 holding an empty ext4 file system.
make_disk() {
  local raw="$1.raw"
  rm -f "$raw" "$1"
  truncate -s 64M "$raw"
  mkfs.ext4 -q -F -L petrel "$raw"
  ./bin/petrel img convert -f raw -O qcow2 "$raw" "$1"
  rm -f "$raw"
}
