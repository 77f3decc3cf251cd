//go:build amd64

package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// buildPetrel compiles cmd/petrel into a temporary directory, or returns
// PETREL_BIN when that names a prebuilt one (machines without Go, such as
// the nested KVM guest of scripts/test-kvm.sh).
func buildPetrel(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PETREL_BIN"); p != "" {
		return p
	}
	bin := filepath.Join(t.TempDir(), "petrel")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(gobin, "build", "-o", bin, "github.com/petrel-vmm/petrel/cmd/petrel")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/petrel: %v\n%s", err, out)
	}
	return bin
}

// TestPetrelRunPowerOffExitCode runs the real command line, `petrel run`,
// with a guest that powers off through ACPI PM1a_CNT: the process must
// exit with code 0, the guest's serial output on its stdout.
func TestPetrelRunPowerOffExitCode(t *testing.T) {
	testutil.NeedKVM(t)
	elf := guest.Build(t, "poweroff.c")
	bin := buildPetrel(t)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "-m", "64M", "-kernel", elf, "-append", "petrel-test via-cli", "-serial", "stdio")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = nil
	err := cmd.Run()
	t.Logf("stdout:\n%s\nstderr:\n%s", indent(stdout.String()), indent(stderr.String()))
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("petrel run exited with code %d, want 0", ee.ExitCode())
	}
	if err != nil {
		t.Fatalf("petrel run: %v", err)
	}
	if resultLine(stdout.String()) != "RESULT PASS" || !strings.Contains(stdout.String(), "cmdline=petrel-test via-cli") {
		t.Fatalf("guest output missing on stdout")
	}
}
