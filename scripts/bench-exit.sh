#!/usr/bin/env bash
# Per-exit cost of a PIO and an MMIO exit, Petrel against a minimal C KVM
# loop running the same guest (vmm/testdata/bench-guest.S: the loops run at
# CPL3 with IOPL=3 and time themselves with rdtsc), plus Petrel's resident
# memory beyond guest RAM and the Go benchmark of the exit dispatch.
#
# ITER exits per loop (default 5000), ROUNDS alternating runs (default 5);
# the minimum per round is kept, since other load only ever adds time.
# Targets: Petrel/C ratio <= 1.15, VMM RSS beyond guest RAM < 10 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
ITER=${ITER:-5000}
ROUNDS=${ROUNDS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

PETREL=${PETREL:-bin/petrel}
if [ ! -x "$PETREL" ]; then
  go build -o "$work/petrel" ./cmd/petrel
  PETREL=$work/petrel
fi
as --64 --defsym ITER="$ITER" -o "$work/guest.o" vmm/testdata/bench-guest.S
ld -m elf_x86_64 -Ttext=0x100000 -e 0x100000 --oformat binary -o "$work/guest.bin" "$work/guest.o"
gcc -O2 -Wall -o "$work/kvm-loop" vmm/testdata/kvm-loop.c
khz=$("$work/kvm-loop" --tsc-khz)

# field NAME FILE: the number after NAME= in FILE.
field() { sed -n "s/^$1=\([0-9]*\).*/\1/p" "$2" | head -1; }

best() { # best CURRENT NEW -> the smaller (empty CURRENT = NEW)
  if [ -z "$1" ] || [ "$2" -lt "$1" ]; then echo "$2"; else echo "$1"; fi
}

c_pio= ; c_mmio= ; p_pio= ; p_mmio= ; rss=
for r in $(seq "$ROUNDS"); do
  "$work/kvm-loop" "$work/guest.bin" > "$work/c.out"
  "$PETREL" run -kernel "$work/guest.bin" -m 256M -serial stdio -v < /dev/null > "$work/p.out" 2> "$work/p.err"
  for f in c p; do
    if [ "$(field iterations "$work/$f.out")" != "$ITER" ]; then
      echo "bench-exit: round $r: the $f run did not finish:" >&2
      cat "$work/$f.out" "$work/p.err" >&2
      exit 1
    fi
  done
  c_pio=$(best "$c_pio" "$(field pio_cycles_total "$work/c.out")")
  c_mmio=$(best "$c_mmio" "$(field mmio_cycles_total "$work/c.out")")
  p_pio=$(best "$p_pio" "$(field pio_cycles_total "$work/p.out")")
  p_mmio=$(best "$p_mmio" "$(field mmio_cycles_total "$work/p.out")")
  kib=$(sed -n 's/.*resident memory: VMM \([0-9]*\) KiB.*/\1/p' "$work/p.err")
  rss=$(best "$rss" "${kib:-0}")
done

awk -v khz="$khz" -v n="$ITER" -v rounds="$ROUNDS" -v cp="$c_pio" -v cm="$c_mmio" -v pp="$p_pio" -v pm="$p_mmio" -v rss="$rss" 'BEGIN {
  ns = 1e6 / khz / n
  printf "exit cost, best of %d rounds of %d exits (TSC %.0f MHz)\n", rounds, n, khz / 1000
  printf "  %-6s %12s %12s %8s  %s\n", "exit", "C loop", "Petrel", "ratio", "target <= 1.15"
  split("PIO MMIO", name, " ")
  c[1] = cp; c[2] = cm; p[1] = pp; p[2] = pm
  for (i = 1; i <= 2; i++) {
    ratio = p[i] / c[i]
    printf "  %-6s %9.2f us %9.2f us %8.3f  %s\n", name[i], c[i] * ns / 1000, p[i] * ns / 1000, ratio, ratio <= 1.15 ? "ok" : "OVER"
  }
  printf "VMM resident memory beyond guest RAM: %.1f MiB (target < 10 MiB): %s\n", rss / 1024, rss < 10240 ? "ok" : "OVER"
}'

echo "Go benchmark of the exit dispatch (no KVM in the loop):"
go test -run '^$' -bench 'BenchmarkDispatch' -benchtime 200000x ./vmm | grep -E '^Benchmark'
