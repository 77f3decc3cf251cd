#!/usr/bin/env bash
# Slow tier: boots Debian's cloud kernel with the u-root initramfs and a
# qcow2 disk on bin/petrel (bzImage decompressed on the host, entered by
# PVH) and checks what Linux says about the machine Petrel built: the e820
# map, every ACPI table (checksums verified early by
# acpi_force_table_verification, no ACPI errors or warnings), the MADT
# entries and the serial console. Under kvm_pvm (no hardware
# virtualization) Linux stops at its int3 self-test, so that is all; with
# VMX/SVM it also waits for PETREL-INIT-OK, hot-adds a second disk over QMP
# (Linux's acpiphp must see it and read it, then eject it on device_del, and
# Petrel must send DEVICE_DELETED), and checks the file the guest wrote on
# the first disk with petrel img and qemu-img convert.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-boot.sh
TIMEOUT=${E2E_TIMEOUT:-240}
MEM=512M
work=out/e2e
mkdir -p "$work"
[[ -x bin/petrel ]] || go build -o bin/petrel ./cmd/petrel

prepare_boot_files
make_disk "$work/disk.qcow2"
log=$work/console.log
: >"$log"

# E2E_VMM=qemu-tcg runs the same boot, hotplug and checks with QEMU (TCG)
# as the VMM: the reference implementation of the same ACPI hotplug
# interface. It proves this script, the initramfs and qmpsend on a machine
# without VMX/SVM, so that on hardware a failure points at Petrel.
vmm=${E2E_VMM:-petrel}
full=0
extra_args=()
append="console=ttyS0 earlyprintk=serial panic=-1 acpi_force_table_verification"
if [[ $vmm == qemu-tcg ]] || hw_virt; then
  full=1
  [[ $vmm == qemu-tcg ]] || echo "e2e: hardware virtualization: full boot to the initramfs, then PCI hotplug over QMP"
  # The disk to hot-plug: a marker in its first sector, as qcow2.
  printf 'petrel-hotplug-marker' >"$work/hot.raw"
  truncate -s 16M "$work/hot.raw"
  rm -f "$work/hot.qcow2" "$work/qmp.sock"
  ./bin/petrel img convert -f raw -O qcow2 "$work/hot.raw" "$work/hot.qcow2"
  go build -o bin/qmpsend ./tools/qmpsend
  extra_args=(-qmp "unix:$work/qmp.sock,server,wait=off")
  append="$append petrel.hotplug=1"
else
  echo "e2e: kvm_pvm (no VMX/SVM): Linux stops at its int3 self-test; checking the early boot only"
fi

if [[ $vmm == qemu-tcg ]]; then
  echo "e2e: reference run with QEMU (TCG) as the VMM; Petrel-specific early checks skipped"
  qemu-system-x86_64 -M pc -accel tcg -m $MEM -nographic -no-reboot -kernel "$KERNEL" -initrd "$INITRD" \
    -append "$append" -drive "file=$work/disk.qcow2,if=none,id=d0" -device virtio-blk-pci,drive=d0,serial=petrel-e2e \
    -qmp "unix:$work/qmp.sock,server,wait=off" >"$log" 2>"$work/petrel.err" &
else
  ./bin/petrel run -m $MEM -kernel "$KERNEL" -initrd "$INITRD" -append "$append" "${extra_args[@]}" \
    -disk "$work/disk.qcow2,serial=petrel-e2e" -no-reboot -serial stdio >"$log" 2>"$work/petrel.err" &
fi
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT

# What Linux must print about Petrel's machine (grep -E patterns).
early=(
  'BIOS-e820: \[mem 0x0000000000000000-0x000000000009fbff\] usable'
  'BIOS-e820: \[mem 0x000000000009fc00-0x00000000000fffff\] reserved'
  'BIOS-e820: \[mem 0x0000000000100000-0x000000001fffffff\] usable'
  'BIOS-e820: \[mem 0x00000000fc000000-0x00000000ffffffff\] reserved'
  'Early table checksum verification enabled'
  'ACPI: RSDP 0x'
  'ACPI: XSDT 0x'
  'ACPI: FACP 0x'
  'ACPI: DSDT 0x'
  'ACPI: FACS 0x'
  'ACPI: APIC 0x'
  'ACPI: LAPIC_NMI \(acpi_id\[0xff\]'
  'ACPI: Using ACPI \(MADT\) for SMP configuration information'
  'smpboot: Allowing 1 CPUs'
  'IOAPIC\[0\]: apic_id'
  'ACPI: INT_SRC_OVR \(bus 0 bus_irq 9 global_irq 9 high level\)'
  'bootconsole \[earlyser0\] enabled|console \[ttyS0\] enabled'
)
late=('PETREL-INIT-OK' 'PETREL-DISK-OK' 'PETREL-HOTPLUG-READ petrel-hotplug-marker' 'PETREL-UNPLUG-OK'
  'DEVICE_DELETED' 'PETREL-POWEROFF')
# The MADT's LAPIC entries are logged only at debug level; a missing one
# shows as "Boot CPU ... not listed by BIOS".
forbidden='ACPI BIOS Error|ACPI Error|ACPI Warning|Incorrect checksum|ACPI: .*invalid|not listed by BIOS|Kernel panic'

missing() {
  local p
  if [[ $vmm == petrel ]]; then
    for p in "${early[@]}"; do grep -Eq "$p" "$log" || echo "$p"; done
  fi
  if ((full)); then
    for p in "${late[@]}"; do grep -Eq "$p" "$log" "$work/qmp.log" 2>/dev/null || echo "$p"; done
  fi
}

# hotplug_step drives QMP once the guest asks for the next step: add the
# disk in slot 6, later remove it and wait for DEVICE_DELETED.
plugged=0 unplugged=0
: >"$work/qmp.log"
hotplug_step() {
  if ((!plugged)) && grep -q PETREL-HOTPLUG-WAIT "$log"; then
    plugged=1
    echo "e2e: hot-adding $work/hot.qcow2 in slot 6"
    ./bin/qmpsend "$work/qmp.sock" \
      "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\",\"node-name\":\"hot0\",\"file\":{\"driver\":\"file\",\"filename\":\"$work/hot.qcow2\"}}}" \
      '{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"hot1","drive":"hot0","addr":"0x6"}}' \
      '{"execute":"query-pci"}' >>"$work/qmp.log" 2>&1 || echo "e2e: QMP hot-add failed (see $work/qmp.log)"
  fi
  if ((plugged && !unplugged)) && grep -q PETREL-UNPLUG-WAIT "$log"; then
    unplugged=1
    echo "e2e: device_del hot1"
    ./bin/qmpsend -timeout 90s "$work/qmp.sock" '{"execute":"device_del","arguments":{"id":"hot1"}}' \
      wait:DEVICE_DELETED >>"$work/qmp.log" 2>&1 &
  fi
}

t0=$(date +%s)
last=-1
while :; do
  ((full)) && hotplug_step
  now=$(( $(date +%s) - t0 ))
  alive=1
  kill -0 $pid 2>/dev/null || alive=0
  if (( now / 10 != last )); then
    last=$(( now / 10 ))
    echo "e2e: ${now}s, $(wc -l <"$log") console lines, last: $(tail -n1 "$log" | cut -c1-100)"
  fi
  if [[ -z $(missing) ]] && { ((!full)) || ((!alive)); }; then
    break
  fi
  if ((!alive)) || ((now >= TIMEOUT)); then
    break
  fi
  sleep 1
done
kill $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
trap - EXIT

fail=0
echo "e2e: console log: $log ($(wc -l <"$log") lines), petrel stderr: $work/petrel.err"
while IFS= read -r p; do
  [[ -n $p ]] || continue
  echo "e2e: MISSING: $p"
  fail=1
done < <(missing)
if grep -Eq "$forbidden" "$log"; then
  echo "e2e: Linux complained:"
  grep -E "$forbidden" "$log" | sed 's/^/    /'
  fail=1
fi

if ((full && !fail)); then
  ./bin/petrel img check "$work/disk.qcow2" || fail=1
  qemu-img convert -O raw "$work/disk.qcow2" "$work/disk.raw"
  got=$(debugfs -R "cat /petrel.txt" "$work/disk.raw" 2>/dev/null || true)
  if [[ $got != "written by petrel-init in the guest" ]]; then
    echo "e2e: /petrel.txt on the disk: '$got'"
    fail=1
  fi
fi
if ((fail)); then
  echo "e2e: FAIL"
  exit 1
fi
echo "e2e: PASS ($(( $(date +%s) - t0 ))s)"
