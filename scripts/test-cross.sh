#!/usr/bin/env bash
# Cross-architecture checks for the POWER port (called by scripts/test.sh):
#  1. the whole repository vets as ppc64le and builds as ppc64 (big-endian),
#     so the _ppc64x.go files of vmm and machine/pseries (build-tagged ppc64 || ppc64le)
#     compile and nothing else breaks the POWER build;
#  2. the portable pseries/FDT tests and vmm's (with its POWER ioctl and
#     structure checks) run as ppc64 and ppc64le binaries under qemu-user,
#     so a byte-order mistake (PAPR data is big-endian in guest memory
#     whatever the host) fails on one of the two.
set -euo pipefail
cd "$(dirname "$0")/.."

export CGO_ENABLED=0
PKGS=(./firmware/fdt/ ./machine/pseries/ ./vmm/)

echo "== GOARCH=ppc64le go vet ./..."
GOARCH=ppc64le go vet ./...
echo "== GOARCH=ppc64 go build ./..."
GOARCH=ppc64 go build ./...

for arch in ppc64 ppc64le; do
	runner="qemu-${arch}-static"
	if ! command -v "$runner" >/dev/null; then
		echo "test-cross: $runner not found (apt-get install qemu-user-static)" >&2
		exit 1
	fi
	echo "== GOARCH=$arch go test under $runner: ${PKGS[*]}"
	GOARCH=$arch go test -count=1 -timeout 5m -exec "$runner" "${PKGS[@]}"
done
echo "test-cross: ok"
