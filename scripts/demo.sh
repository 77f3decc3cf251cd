#!/usr/bin/env bash
# make demo. The VMM part (booting a guest) is added here by the VMM work;
# the image tool demo always runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/demo-img.sh
