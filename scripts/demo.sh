#!/usr/bin/env bash
# The demo: builds Petrel, fetches Debian's cloud kernel, makes the u-root
# initramfs and a qcow2 disk, and boots them with the console on this
# terminal. With hardware virtualization the guest runs to its init and
# powers off; under kvm_pvm (software virtualization) Linux stops at its
# int3 self-test, so the demo says so and ends after the early boot (the
# ACPI and interrupt-controller lines) or DEMO_TIMEOUT seconds (90).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-boot.sh
TIMEOUT=${DEMO_TIMEOUT:-90}
if [[ -f scripts/demo-img.sh ]]; then
  bash scripts/demo-img.sh
fi
go build -o bin/petrel ./cmd/petrel
prepare_boot_files
mkdir -p out/demo
make_disk out/demo/disk.qcow2
log=out/demo/console.log
: >"$log"
full=0
if hw_virt; then
  full=1
  echo "demo: booting $KERNEL with $INITRD on Petrel (hardware virtualization)"
else
  echo "demo: this KVM is kvm_pvm, without hardware virtualization: Linux's"
  echo "demo: kernel-mode code is emulated and it stops at its int3 self-test."
  echo "demo: Showing the early boot, up to the ACPI/IOAPIC setup or ${TIMEOUT}s."
fi
./bin/petrel run -v -m 512M -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 earlyprintk=serial panic=-1" \
  -disk out/demo/disk.qcow2 -no-reboot -serial stdio >"$log" 2>out/demo/petrel.err &
pid=$!
tail -n +1 -f "$log" --pid=$pid &
tailpid=$!
trap 'kill $pid $tailpid 2>/dev/null || true' EXIT
t0=$(date +%s)
while kill -0 $pid 2>/dev/null; do
  if ((!full)) && grep -q 'IOAPIC\[0\]' "$log"; then
    sleep 3
    break
  fi
  if (( $(date +%s) - t0 >= TIMEOUT )); then
    echo "demo: ${TIMEOUT}s passed"
    break
  fi
  sleep 1
done
kill $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
sleep 0.5
kill $tailpid 2>/dev/null || true
trap - EXIT
echo "demo: $(wc -l <"$log") console lines in $(( $(date +%s) - t0 ))s (log: $log; Petrel's own messages: out/demo/petrel.err)"
