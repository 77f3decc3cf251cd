#!/usr/bin/env bash
# make bench: every scripts/bench-*.sh except bench-boot.sh (make bench-boot).
set -euo pipefail
cd "$(dirname "$0")/.."
for s in scripts/bench-*.sh; do
  [ "$s" = scripts/bench-boot.sh ] && continue
  echo "==== $s"
  bash "$s"
done
