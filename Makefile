# Petrel. Every target's real work is in scripts/ so that each stays readable.
GO ?= go
BIN := bin/petrel

.PHONY: all deps build test vet iotests demo bench bench-boot e2e e2e-pseries e2e-net fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/petrel

vet:
	$(GO) vet ./...

# The Debian packages the tests and the demo use (installs the missing ones
# as root; otherwise prints the command).
deps:
	bash scripts/deps.sh

# Everything: unit, interop, fuzz-seed and whole-VM tests, and the Linux tier.
test: deps build vet
	bash scripts/test.sh

# QEMU's qemu-iotests (fetched from Debian into out/) judge `petrel img`
# against Debian's qemu-img: see scripts/iotests.sh.
iotests: deps build
	bash scripts/iotests.sh

demo: deps build
	bash scripts/demo.sh

bench: build
	bash scripts/bench.sh

bench-boot: build
	bash scripts/bench-boot.sh

# The Linux tier: Debian's kernel on Petrel, on this host's KVM or nested.
e2e: deps build
	bash scripts/e2e.sh

e2e-pseries:
	bash scripts/e2e-pseries.sh

e2e-net:
	bash scripts/e2e-net.sh

# Short coverage-guided runs of every fuzz target (FUZZTIME per target).
fuzz:
	bash scripts/fuzz.sh

clean:
	rm -rf bin
