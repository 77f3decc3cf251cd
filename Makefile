# Petrel. Every target's real work is in scripts/ so that each stays readable.
GO ?= go
BIN := bin/petrel

.PHONY: all build test vet iotests demo bench bench-boot e2e e2e-reference e2e-pseries e2e-net fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/petrel

vet:
	$(GO) vet ./...

# The whole fast tier: unit, interop, fuzz-seed and whole-VM tests.
test: build vet
	bash scripts/test.sh

# QEMU's qemu-iotests (fetched from Debian into out/) judge `petrel img`
# against Debian's qemu-img: see scripts/iotests.sh.
iotests: build
	bash scripts/iotests.sh

demo: build
	bash scripts/demo.sh

bench: build
	bash scripts/bench.sh

bench-boot: build
	bash scripts/bench-boot.sh

# Slow tier: boots Debian's stock kernel (see README).
e2e: build
	bash scripts/e2e.sh

# The slow tier's harness checked against QEMU (TCG) as the VMM.
e2e-reference: build
	E2E_VMM=qemu-tcg bash scripts/e2e.sh

e2e-pseries:
	bash scripts/e2e-pseries.sh

e2e-net:
	bash scripts/e2e-net.sh

# Short coverage-guided runs of every fuzz target (FUZZTIME per target).
fuzz:
	bash scripts/fuzz.sh

clean:
	rm -rf bin
