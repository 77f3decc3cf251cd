#!/usr/bin/env bash
# Fetches the Debian cloud kernel that linux-image-cloud-amd64 depends on and
# unpacks it into out/kernel/. Prints the bzImage path. Idempotent: a kernel
# already unpacked in out/ is reused (remove out/kernel to refresh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/kernel
mkdir -p "$out"
bz=$(ls "$out"/root/boot/vmlinuz-*-cloud-amd64 2>/dev/null | head -n1 || true)
if [[ -n "$bz" ]]; then
  echo "$bz"
  exit 0
fi
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z "$pkg" ]]; then
  echo "fetch-kernel: refreshing the apt lists" >&2
  # A half-synced mirror index for one suite or architecture makes
  # apt-get update fail although the list we need is fine: go on and let
  # the lookup below say whether it is.
  apt-get update -qq >&2 || echo "fetch-kernel: apt-get update reported errors; trying anyway" >&2
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[[ -n "$pkg" ]] || { echo "fetch-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
echo "fetch-kernel: downloading $pkg" >&2
(cd "$out" && rm -f ./*.deb && apt-get download "$pkg" >&2)
rm -rf "$out/root"
dpkg -x "$out"/"$pkg"_*.deb "$out/root"
bz=$(ls "$out"/root/boot/vmlinuz-*-cloud-amd64 | head -n1)
echo "$bz"
