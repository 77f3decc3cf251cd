//go:build amd64

package pc

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/tests/guest"
	"golang.org/x/sys/unix"
)

// buildGuest assembles a flat PVH guest from testdata (tests/guest.Flat:
// binutils, or the prebuilt copy under PETREL_GUEST_DIR).
func buildGuest(t *testing.T, src string) []byte {
	t.Helper()
	return guest.Flat(t, strings.TrimSuffix(src, ".S"))
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
			m.mem.Read(0x9000, b)
			if b[0] == v {
				time.Sleep(10 * time.Millisecond) // let the vCPU reach hlt with IF set
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("guest never set flag %d (serial %q)", v, out.String())
	}
	waitFlag(1)
	if err := m.vm.SignalMSI(0xfee00000, 0x40); err != nil {
		t.Fatalf("SignalMSI: %v", err)
	}
	waitFlag(2)
	gsi, err := m.vm.AddMSIRoute(0xfee00000, 0x41)
	if err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := m.vm.AddIrqfd(efd, gsi); err != nil {
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

// TestIoeventfdSkipsTheVMM: a guest write matching an ioeventfd signals
// the eventfd inside KVM without an exit; a write with another value still
// exits to the VMM.
func TestIoeventfdSkipsTheVMM(t *testing.T) {
	testutil.NeedKVM(t)
	code := concat(
		[]byte{0x66, 0xba, 0x10, 0x05}, // mov dx, 0x510
		[]byte{0x66, 0xb8, 0x34, 0x12}, // mov ax, 0x1234
		[]byte{0x66, 0xef},             // out dx, ax (matches: no exit)
		[]byte{0x66, 0xef},             // again
		[]byte{0x66, 0xb8, 0x35, 0x12}, // mov ax, 0x1235
		[]byte{0x66, 0xef},             // out dx, ax (no match: exits)
		acpiPowerOff, hlt)
	m, err := New(Config{MemoryMiB: 16, KernelBytes: pvhELF(code, 0x100000)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	match := uint64(0x1234)
	if err := m.vm.AddIoeventfd(efd, 0x510, 2, true, &match); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Run(context.Background()); err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Read(efd, buf); err != nil || n != 8 || buf[0] != 2 {
		t.Fatalf("eventfd read %d bytes %x, %v; want a count of 2", n, buf, err)
	}
	if got := m.VCPUs()[0].IOExits.Load(); got != 2 {
		t.Fatalf("%d IO exits, want 2 (the unmatched write and the power-off)", got)
	}
	if got := m.pio.Unhandled.Load(); got != 1 {
		t.Fatalf("%d unclaimed PIO accesses, want 1", got)
	}
}

// TestPITReachesIOAPICPin2: the in-kernel PIT's IRQ 0 arrives on IOAPIC
// pin 2, where the MADT's interrupt source override tells the guest to
// look for it.
func TestPITReachesIOAPICPin2(t *testing.T) {
	testutil.NeedKVM(t)
	var out bytes.Buffer
	m, err := New(Config{MemoryMiB: 16, KernelBytes: buildGuest(t, "pit-guest.S"), Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if r, err := m.Run(ctx); err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v (serial %q)", r, err, out.String())
	}
	if out.String() != "PIT" {
		t.Fatalf("serial %q, want PIT from the pin 2 handler", out.String())
	}
}
