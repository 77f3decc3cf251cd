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
	"golang.org/x/sys/unix"
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

// TestMSIAndIrqfdReachGuest: an MSI injected with KVM_SIGNAL_MSI, then one
// sent through an eventfd bound by an irqfd to an MSI GSI route, both
// arrive at the guest's IDT at the vectors their data words name.
func TestMSIAndIrqfdReachGuest(t *testing.T) {
	testutil.NeedKVM(t)
	var out bytes.Buffer
	m, err := New(Config{MemoryMiB: 16, KernelBytes: buildGuest(t, "msi-guest.S"), Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		r   ExitReason
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := m.Run(ctx); done <- result{r, err} }()
	waitFlag := func(v byte) {
		t.Helper()
		for i := 0; i < 2000; i++ {
			b := []byte{0}
			m.Memory().Read(0x9000, b)
			if b[0] == v {
				time.Sleep(10 * time.Millisecond) // let the vCPU reach hlt with IF set
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("guest never set flag %d (serial %q)", v, out.String())
	}
	waitFlag(1)
	if err := m.VM().SignalMSI(0xfee00000, 0x40); err != nil {
		t.Fatalf("SignalMSI: %v", err)
	}
	waitFlag(2)
	gsi, err := m.VM().AddMSIRoute(0xfee00000, 0x41)
	if err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := m.VM().AddIrqfd(efd, gsi); err != nil {
		t.Fatal(err)
	}
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(efd, one); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || res.r != ExitPowerOff {
		t.Fatalf("run: %v, %v (serial %q)", res.r, res.err, out.String())
	}
	if out.String() != "MF" {
		t.Fatalf("serial %q, want MF", out.String())
	}
}
