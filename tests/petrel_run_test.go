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
func buildPetrel(t testing.TB) string {
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

// TestPetrelRunQEMUDiskOptions runs the virtio-blk guest with disks given
// the way QEMU takes them: a -blockdev node (keyval and JSON forms) or a
// -drive if=none, each with -device virtio-blk-pci,drive=. The guest's
// driver must find the disk, with its serial, and pass.
func TestPetrelRunQEMUDiskOptions(t *testing.T) {
	testutil.NeedKVM(t)
	elf := guest.Build(t, "virtio_blk.c")
	bin := buildPetrel(t)
	for name, disk := range map[string]func(path string) []string{
		"blockdev": func(p string) []string {
			return []string{"-blockdev", "driver=qcow2,node-name=n0,file.driver=file,file.filename=" + strings.ReplaceAll(p, ",", ",,")}
		},
		"blockdev-json": func(p string) []string {
			return []string{"-blockdev", `{"driver":"qcow2","node-name":"n0","file":{"driver":"file","filename":"` + p + `"}}`}
		},
		"drive-if-none": func(p string) []string {
			return []string{"-drive", "file=" + strings.ReplaceAll(p, ",", ",,") + ",if=none,id=n0,format=qcow2"}
		},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"run", "-m", "64M", "-kernel", elf, "-serial", "stdio"}, disk(newQcow2(t, "16M"))...)
			args = append(args, "-device", "virtio-blk-pci,drive=n0,serial=petrel-disk-0,id=vd0")
			ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("petrel %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, indent(stdout.String()), indent(stderr.String()))
			}
			if resultLine(stdout.String()) != "RESULT PASS" || !strings.Contains(stdout.String(), "SERIAL petrel-disk-0") {
				t.Fatalf("guest did not pass with the disk:\n%s", indent(stdout.String()))
			}
		})
	}
}
