#!/usr/bin/env bash
# Installs the Debian packages that make test, make iotests, make e2e and
# make demo use, when any is missing: one apt-get update and one apt-get
# install of only the missing packages. As non-root it prints the exact
# command and fails.
# (Debian's cloud kernel and busybox-static are fetched with apt-get download
# by scripts/fetch-kernel.sh and scripts/lib-nested.sh, not installed.)
set -euo pipefail

# command package: what the tests and scripts run, and where Debian has it.
need=(
  qemu-img:qemu-utils qemu-io:qemu-utils        # interop tests, the Linux tier's checks
  qemu-nbd:qemu-utils qemu-storage-daemon:qemu-system-common # qemu-iotests' writers and checkers
  python3:python3 dpkg-source:dpkg-dev          # qemu-iotests' runner; unpacking QEMU's source
  qemu-system-x86_64:qemu-system-x86            # L1 of the Linux tier, QEMU peers in tests
  iasl:acpica-tools acpiexec:acpica-tools       # DSDT golden and execution tests
  dtc:device-tree-compiler                      # pseries FDT tests
  qemu-ppc64-static:qemu-user-static            # scripts/test-cross.sh
  powerpc64le-linux-gnu-as:binutils-powerpc64le-linux-gnu
  gcc:gcc as:binutils ld:binutils make:make     # guest programs, the C exit-cost peer
  mkfs.ext4:e2fsprogs debugfs:e2fsprogs         # the Linux tier's root disk
  cpio:cpio tar:tar apt-get:apt dpkg-deb:dpkg
  bzip2:bzip2 xz:xz-utils lz4:lz4 zstd:zstd lzop:lzop gzip:gzip # bzImage payload tests
)
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ " ${missing[*]} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done
((${#missing[@]})) || exit 0

install="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $EUID != 0 ]]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run as root:  $install" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A stale or half-synced mirror index (seen for foreign architectures) makes
# apt-get update exit non-zero although the lists we need are fine: go on and
# let apt-get install say what is really missing.
apt-get update -qq || echo "deps: apt-get update reported errors; trying the install anyway" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
