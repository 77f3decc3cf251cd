#!/usr/bin/env bash
# make test: everything in the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -timeout 20m ./...
bash scripts/test-kvm.sh # the whole-VM tests again on real KVM (nested where the host has none)
# Portable pseries/FDT logic again as big- and little-endian POWER binaries.
if [ -x scripts/test-cross.sh ]; then bash scripts/test-cross.sh; fi
# The Linux tier: Debian's kernel on Petrel (nested where there is no VT-x/AMD-V).
bash scripts/e2e.sh
# Linux on Petrel's virtio-net: user-mode and tap networking, a NIC hot-plugged over QMP.
bash scripts/e2e-net.sh
