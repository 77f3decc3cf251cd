#!/usr/bin/env bash
# savevm/loadvm of the same guest shape in Petrel and in QEMU, in one run:
# a 512 MiB guest that touched 128 MiB (tests/guest/progs/touch.c), its
# disk a qcow2 image; HMP savevm and loadvm over QMP, timed from the
# command to its reply, the minimum of SAVEVM_REPEAT (3) rounds each.
# QEMU runs on the same /dev/kvm (TCG where it cannot); the benchmark says
# which. Also the VM state's size as qemu-img lists it and how much the
# image grew per save (zero pages must cost nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(go test ./tests -run '^$' -bench '^BenchmarkSaveVM$' -benchtime 1x -count 1 -timeout 20m -v 2>&1) || {
  echo "$out" >&2
  exit 1
}
grep -E 'QEMU on ' <<<"$out" | sed 's/^ *savevm_bench_test.go:[0-9]*: /bench-savevm: /' || true
get() { sed -n "s/^SAVEVM $1 .*$2=\([0-9.]*\).*/\1/p" <<<"$out"; }
size() { sed -n "s/^SAVEVM $1 .*vm_size=\"\([^\"]*\)\".*/\1/p" <<<"$out"; }
for what in save load; do
  p=$(get petrel ${what}_ms) q=$(get qemu ${what}_ms)
  printf '%svm of 512 MiB, 128 MiB touched: petrel %8.1f ms  qemu %8.1f ms  ratio %.2f\n' "$what" "$p" "$q" "$(echo "$p / $q" | bc -l)"
done
printf 'VM state in the image: petrel %s, qemu %s; image growth per save: petrel %s MiB, qemu %s MiB\n' \
  "$(size petrel)" "$(size qemu)" "$(get petrel image_growth_mib_per_save)" "$(get qemu image_growth_mib_per_save)"
