#!/usr/bin/env bash
# Boot benchmark, one run each with the same Debian cloud kernel and u-root
# initramfs: Petrel with the bzImage decompressed on the host and entered
# by PVH, Petrel with the 64-bit boot protocol (-boot-protocol linux64, the
# in-guest decompressor), and QEMU (-enable-kvm). For each: wall time from
# process start to the first byte on the serial port and to the kernel's
# first "ACPI:" line, and the VMM's peak RSS beyond guest RAM (VmHWM minus
# the resident part of the guest-RAM mapping). QEMU boots the bzImage and,
# for the PVH comparison, the same decompressed vmlinux Petrel cached
# (QEMU enters an ELF with a PVH note by PVH). Ratios: Petrel PVH against
# QEMU PVH, Petrel linux64 against QEMU with the bzImage.
# Under kvm_pvm the kernel's own code is emulated, so absolute times are
# slow; the comparison is what counts. BENCH_TIMEOUT bounds each run (180 s).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-boot.sh
TIMEOUT=${BENCH_TIMEOUT:-180}
MEM_MIB=512
go build -o bin/petrel ./cmd/petrel
prepare_boot_files
APPEND="console=ttyS0 earlyprintk=serial panic=-1"
out=out/bench-boot
mkdir -p "$out"
# Warm the decompressed-kernel cache so the PVH line shows the steady state
# (the first boot of a new kernel also pays the host-side decompression).
./bin/petrel run -m ${MEM_MIB}M -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" -serial none -v 2>&1 &
warm=$!
sleep 5
kill $warm 2>/dev/null || true
wait $warm 2>/dev/null || true

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# guest_rss_kib PID: resident KiB of the largest mapping at least as big as guest RAM.
guest_rss_kib() {
  awk -v min=$((MEM_MIB * 1024)) '
    /^[0-9a-f]+-[0-9a-f]+ / { split($1, a, "-"); size = 0 }
    /^Size:/ { size = $2 }
    /^Rss:/ { if (size >= min && $2 > best) best = $2 }
    END { print best + 0 }' "/proc/$1/smaps" 2>/dev/null || echo 0
}

# measure NAME CMD...: sets FIRST_MS, ACPI_MS, EXTRA_MIB.
measure() {
  local name=$1
  shift
  local log="$out/$name.log" t0 pid first=-1 acpi=-1 hwm=0 grss=0 line
  : >"$log"
  t0=$(now_ms)
  coproc VMM { exec "$@" 2>"$out/$name.err"; }
  pid=$VMM_PID
  local fd=${VMM[0]}
  if IFS= read -r -n1 -t "$TIMEOUT" -u "$fd" line; then
    first=$(( $(now_ms) - t0 ))
    while IFS= read -r -t "$TIMEOUT" -u "$fd" line; do
      printf '%s\n' "$line" >>"$log"
      if [[ $line == *"ACPI: "* ]]; then
        acpi=$(( $(now_ms) - t0 ))
        break
      fi
      if (( $(now_ms) - t0 > TIMEOUT * 1000 )); then break; fi
    done
  fi
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  grss=$(guest_rss_kib "$pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  FIRST_MS=$first
  ACPI_MS=$acpi
  EXTRA_MIB=$(( (hwm - grss) / 1024 ))
}

ratio() { # a b -> a/b with two decimals, "n/a" when either is missing
  if (($1 < 0 || $2 <= 0)); then echo "n/a"; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}

cache=${XDG_CACHE_HOME:-$HOME/.cache}/petrel/kernels
VMLINUX="$cache/$(sha256sum "$KERNEL" | cut -d' ' -f1).vmlinux"
[[ -f $VMLINUX ]] || { echo "bench-boot: no cached vmlinux at $VMLINUX" >&2; exit 1; }
measure qemu-pvh qemu-system-x86_64 -enable-kvm -cpu host,-arch-capabilities,-cx16,-xsave -m ${MEM_MIB}M \
  -kernel "$VMLINUX" -initrd "$INITRD" -append "$APPEND" -serial stdio -display none -monitor none \
  -nodefaults -no-reboot
v_first=$FIRST_MS v_acpi=$ACPI_MS v_mem=$EXTRA_MIB
measure qemu qemu-system-x86_64 -enable-kvm -cpu host,-arch-capabilities,-cx16,-xsave -m ${MEM_MIB}M \
  -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" -serial stdio -display none -monitor none \
  -nodefaults -no-reboot
q_first=$FIRST_MS q_acpi=$ACPI_MS q_mem=$EXTRA_MIB
measure petrel-pvh ./bin/petrel run -m ${MEM_MIB}M -boot-protocol pvh -kernel "$KERNEL" -initrd "$INITRD" \
  -append "$APPEND" -serial stdio
p_first=$FIRST_MS p_acpi=$ACPI_MS p_mem=$EXTRA_MIB
measure petrel-linux64 ./bin/petrel run -m ${MEM_MIB}M -boot-protocol linux64 -kernel "$KERNEL" -initrd "$INITRD" \
  -append "$APPEND" -serial stdio
l_first=$FIRST_MS l_acpi=$ACPI_MS l_mem=$EXTRA_MIB

echo
echo "boot benchmark: $(basename "$KERNEL"), ${MEM_MIB} MiB, $(hw_virt && echo 'hardware virtualization' || echo 'kvm_pvm (software)')"
printf '%-16s %14s %8s %14s %8s %12s %8s\n' vmm "first byte ms" "x qemu" "first ACPI: ms" "x qemu" "RSS-RAM MiB" "x qemu"
row() { # name first acpi mem qfirst qacpi qmem
  printf '%-16s %14s %8s %14s %8s %12s %8s\n' "$1" "$2" "$(ratio "$2" "$5")" "$3" "$(ratio "$3" "$6")" "$4" "$(ratio "$4" "$7")"
}
row petrel-pvh "$p_first" "$p_acpi" "$p_mem" "$v_first" "$v_acpi" "$v_mem"
row qemu-pvh "$v_first" "$v_acpi" "$v_mem" "$v_first" "$v_acpi" "$v_mem"
row petrel-linux64 "$l_first" "$l_acpi" "$l_mem" "$q_first" "$q_acpi" "$q_mem"
row qemu-bzimage "$q_first" "$q_acpi" "$q_mem" "$q_first" "$q_acpi" "$q_mem"
# The user's view: the same bzImage given to both, Petrel choosing PVH.
# (QEMU's first byte comes from the kernel's real-mode setup code, which
# PVH never runs, so only the ACPI and memory columns compare like for like.)
row "petrel-pvh/bz" "$p_first" "$p_acpi" "$p_mem" "$q_first" "$q_acpi" "$q_mem"
echo "(-1 = not reached within ${TIMEOUT}s; logs in $out/)"
bash scripts/bench-nested.sh # the same comparison on real KVM inside L1
