package pc

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// buildGuest assembles a flat PVH guest from testdata with binutils.
func buildGuest(t *testing.T, src string) []byte {
	t.Helper()
	as := testutil.NeedTool(t, "as")
	ld := testutil.NeedTool(t, "ld")
	dir := t.TempDir()
	obj, bin := filepath.Join(dir, "g.o"), filepath.Join(dir, "g.bin")
	if out, err := exec.Command(as, "--32", "-o", obj, filepath.Join("testdata", src)).CombinedOutput(); err != nil {
		t.Fatalf("as: %v\n%s", err, out)
	}
	if out, err := exec.Command(ld, "-m", "elf_i386", "-Ttext=0x100000", "-e", "0x100000", "--oformat", "binary",
		"-o", bin, obj).CombinedOutput(); err != nil {
		t.Fatalf("ld: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSerialInterruptReachesGuest: COM1's THR-empty interrupt goes out on
// KVM_IRQ_LINE 4, through the in-kernel IOAPIC (pin 4 -> vector 0x30) and
// LAPIC, to the guest's IDT; the PIC stays masked, so no stray vector 4.
func TestSerialInterruptReachesGuest(t *testing.T) {
	testutil.NeedKVM(t)
	var out bytes.Buffer
	m, err := New(Config{MemoryMiB: 16, KernelBytes: buildGuest(t, "irq-guest.S"), Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := m.Run(ctx)
	if err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v (serial %q)", r, err, out.String())
	}
	if out.String() != "IRQ4" {
		t.Fatalf("serial %q, want IRQ4 from the vector 0x30 handler", out.String())
	}
}
