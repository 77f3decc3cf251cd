#!/usr/bin/env bash
# Image benchmarks: Petrel's `petrel img` against qemu-img on the same
# files, the best of BENCH_RUNS runs each. Every line prints both times
# and the ratio Petrel/qemu-img (lower is better for Petrel; target <= 1.0).
#
#   BENCH_DIR  scratch directory (default: a temp dir, removed at the end)
#   BENCH_SIZE size of the mixed-data image in MiB (default 1024)
#   BENCH_RUNS runs of each command; the best is printed (default 3)
#   PETREL     the petrel binary to time (default: bin/petrel, built if absent)
#   BENCH_ONLY run only these sections (space-separated: convert bench
#              qed check; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PETREL:-}" ]; then
  [ -x bin/petrel ] || go build -o bin/petrel ./cmd/petrel
  PETREL=$PWD/bin/petrel
fi
command -v qemu-img >/dev/null || { echo "bench-img: qemu-img not installed (apt-get install qemu-utils)"; exit 1; }

dir=${BENCH_DIR:-$(mktemp -d /tmp/petrel-bench-img.XXXXXX)}
[ -n "${BENCH_DIR:-}" ] || trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"
size_mb=${BENCH_SIZE:-1024}

RUNS=${BENCH_RUNS:-3}
ONLY=${BENCH_ONLY:-convert bench qed check}
want() { [[ " $ONLY " == *" $1 "* ]]; }
now() { date +%s.%N; }
# timed CMD...: run CMD quietly, print its wall time in seconds.
timed() {
  local s e
  sync # do not make the next command pay for the previous one's dirty pages
  s=$(now)
  "$@" >/dev/null
  e=$(now)
  echo "$e - $s" | bc -l
}
line() { # name petrel_seconds qemu_seconds
  printf '%-34s petrel %8.3fs  qemu-img %8.3fs  ratio %5.2f\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"
}
fmin() { if (( $(echo "$1 < $2" | bc -l) )); then echo "$1"; else echo "$2"; fi; }
# pair NAME SETUP QCMD PCMD: RUNS alternating runs of the qemu-img and the
# Petrel command (each after SETUP, untimed); prints the best time of each.
# The machine is shared, so the best of a few runs is the fair figure.
pair() {
  local name=$1 setup=$2 qcmd=$3 pcmd=$4 q=999999 p=999999 i
  for ((i = 0; i < RUNS; i++)); do
    eval "$setup"
    q=$(fmin "$q" "$(eval "timed $qcmd")")
    eval "$setup"
    p=$(fmin "$p" "$(eval "timed $pcmd")")
  done
  line "$name" "$p" "$q"
}
# compare NAME ARGS...: `petrel img ARGS` against `qemu-img ARGS`.
compare() {
  local name=$1; shift
  local args
  args=$(printf '%q ' "$@")
  pair "$name" : "qemu-img $args" "\"\$PETREL\" img $args"
}

echo "== generating a ${size_mb} MiB image with mixed data in $dir"
src=$dir/mixed.raw
rm -f "$src"
truncate -s "${size_mb}M" "$src"
# Per 4 MiB region: random data, a hole, compressible text, written
# zeroes, half random half hole.
text=$dir/text.bin
{ yes "petrel block benchmark: compressible text line 0123456789" || true; } | head -c 4M > "$text"
for ((i = 0; i < size_mb / 4; i++)); do
  case $((i % 5)) in
    0) dd if=/dev/urandom of="$src" bs=1M count=4 seek=$((i * 4)) conv=notrunc status=none ;;
    2) dd if="$text" of="$src" bs=1M count=4 seek=$((i * 4)) conv=notrunc status=none ;;
    3) dd if=/dev/zero of="$src" bs=1M count=4 seek=$((i * 4)) conv=notrunc status=none ;;
    4) dd if=/dev/urandom of="$src" bs=1M count=2 seek=$((i * 4)) conv=notrunc status=none ;;
  esac
done
sync

# The qcow2 image the bench and check lines read (qemu-img's own convert).
img=$dir/q.qcow2
qemu-img convert -O qcow2 "$src" "$img"

if want convert; then
echo "== convert (best of $RUNS)"
pair "convert raw->qcow2 (${size_mb} MiB)" 'rm -f "$dir/o.qcow2"' \
  'qemu-img convert -O qcow2 "$src" "$dir/o.qcow2"' '"$PETREL" img convert -O qcow2 "$src" "$dir/o.qcow2"'
qemu-img compare -q "$src" "$dir/o.qcow2" || { echo "petrel's qcow2 differs from the source"; exit 1; }
pair "convert qcow2->raw (${size_mb} MiB)" 'rm -f "$dir/o.raw"' \
  'qemu-img convert -O raw "$img" "$dir/o.raw"' '"$PETREL" img convert -O raw "$img" "$dir/o.raw"'
cmp -s "$src" "$dir/o.raw" || { echo "petrel's raw output differs"; exit 1; }
rm -f "$dir/o.raw" "$dir/o.qcow2"
fi

bytes=$((size_mb << 20))
# A "random" walk: a large odd step (in 4 KiB units) modulo the image.
rstep=$(( (1000003 * 4096) % bytes ))

if want bench; then
echo "== bench (best of $RUNS, writes on fresh copies of the qcow2 image)"
for d in 1 16; do
  compare "bench 4k random read  depth $d" bench -f qcow2 -c 20000 -d $d -s 4k -S $rstep "$img"
done
for d in 1 16; do
  pair "bench 4k random write depth $d" 'cp --sparse=always "$img" "$dir/w.qcow2"' \
    'qemu-img bench -f qcow2 -w -c 20000 -d $d -s 4k -S $rstep "$dir/w.qcow2"' \
    '"$PETREL" img bench -f qcow2 -w -c 20000 -d $d -s 4k -S $rstep "$dir/w.qcow2"'
done
for d in 1 16; do
  compare "bench 64k seq read    depth $d" bench -f qcow2 -c 8000 -d $d -s 64k "$img"
done
for d in 1 16; do
  pair "bench 64k seq write   depth $d" 'cp --sparse=always "$img" "$dir/w.qcow2"' \
    'qemu-img bench -f qcow2 -w -c 8000 -d $d -s 64k "$dir/w.qcow2"' \
    '"$PETREL" img bench -f qcow2 -w -c 8000 -d $d -s 64k "$dir/w.qcow2"'
done
rm -f "$dir/w.qcow2"
fi

if want qed; then
echo "== QED (Petrel's own engine)"
pair "convert raw->qed (${size_mb} MiB)" 'rm -f "$dir/o.qed"' \
  'qemu-img convert -O qed "$src" "$dir/o.qed"' '"$PETREL" img convert -O qed "$src" "$dir/o.qed"'
qemu-img compare -q "$src" "$dir/o.qed" || { echo "petrel's qed differs from the source"; exit 1; }
qemu-img convert -O qed "$src" "$dir/q.qed"
for d in 1 16; do
  compare "qed bench 4k random read depth $d" bench -f qed -c 20000 -d $d -s 4k -S $rstep "$dir/q.qed"
done
for d in 1 16; do
  pair "qed bench 4k random write depth $d" 'cp --sparse=always "$dir/q.qed" "$dir/w.qed"' \
    'qemu-img bench -f qed -w -c 20000 -d $d -s 4k -S $rstep "$dir/w.qed"' \
    '"$PETREL" img bench -f qed -w -c 20000 -d $d -s 4k -S $rstep "$dir/w.qed"'
done
compare "check ${size_mb} MiB mixed qed" check "$dir/q.qed"
rm -f "$dir/w.qed" "$dir/q.qed" "$dir/o.qed"
fi

if want check; then
echo "== check of a large sparse image"
sparse=$dir/sparse.qcow2
qemu-img create -q -f qcow2 "$sparse" 2T
ioargs=()
for ((i = 0; i < 64; i++)); do ioargs+=(-c "write -P $((i + 1)) $((i * 31))G 1M"); done
qemu-io "${ioargs[@]}" "$sparse" >/dev/null
compare "check 2 TiB sparse qcow2" check "$sparse"
compare "check ${size_mb} MiB mixed qcow2" check "$img"
fi
