#!/usr/bin/env bash
# The image half of `make demo`: create a qcow2 image with bin/petrel,
# fill it with a pattern, snapshot it, change it, and show info and check.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/petrel ] || go build -o bin/petrel ./cmd/petrel
P=$PWD/bin/petrel
dir=${DEMO_DIR:-$(mktemp -d /tmp/petrel-demo-img.XXXXXX)}
[ -n "${DEMO_DIR:-}" ] || trap 'rm -rf "$dir"' EXIT
cd "$dir"
say() { printf '\n$ %s\n' "$*"; "$@"; }

# A 64 MiB raw file: a text pattern at the start, random data at 16 MiB,
# the rest a hole.
truncate -s 64M pattern.raw
{ yes "Petrel demo pattern" || true; } | head -c 4M | dd of=pattern.raw conv=notrunc status=none
dd if=/dev/urandom of=pattern.raw bs=1M count=2 seek=16 conv=notrunc status=none

say "$P" img create -f qcow2 base.qcow2 64M
say "$P" img convert -n -O qcow2 pattern.raw base.qcow2
say "$P" img snapshot -c before-bench base.qcow2
say "$P" img bench -w -c 256 -d 8 -s 64k -o 32M --pattern=0xab base.qcow2
say "$P" img snapshot -l base.qcow2
say "$P" img info base.qcow2
say "$P" img check base.qcow2
say "$P" img create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
say "$P" img map overlay.qcow2
say "$P" img info --backing-chain overlay.qcow2
# The snapshot still holds the converted pattern; the active layer differs.
say "$P" img snapshot -a before-bench base.qcow2
say "$P" img compare pattern.raw base.qcow2
if command -v qemu-img >/dev/null; then
  say qemu-img check base.qcow2
fi
