package vmm

import (
	"errors"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"golang.org/x/sys/unix"
)

func newTestVM(t *testing.T) *VM {
	t.Helper()
	testutil.NeedKVM(t)
	k, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	vm, err := k.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

func TestVMEventRouter(t *testing.T) {
	vm := newTestVM(t)
	if _, err := vm.AddMSIRoute(0xfee00000, 0x30); err != ErrNoIRQChip {
		t.Fatalf("MSI route without irqchip: %v", err)
	}
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	// The ISA timer override: GSI 0 to IOAPIC pin 2, PIC pin 0 kept.
	if err := vm.RouteToIOAPICPin(0, 2); err != nil {
		t.Fatal(err)
	}
	if r := vm.routes[0]; r.npins != 2 || r.pins[0] != [2]uint32{irqchipPICMaster, 0} || r.pins[1] != [2]uint32{irqchipIOAPIC, 2} {
		t.Fatalf("gsi 0 route %+v", r)
	}
	if vm.RouteToIOAPICPin(0, 24) == nil || vm.RouteToIOAPICPin(100, 2) == nil {
		t.Fatal("bad pin or unknown gsi accepted")
	}
	g1, err := vm.AddMSIRoute(0xfee00000, 0x30)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := vm.AddMSIRoute(0xfee00000, 0x31)
	if err != nil || g1 < ioapicPins || g2 == g1 {
		t.Fatalf("gsis %d, %d, %v", g1, g2, err)
	}
	if err := vm.UpdateMSIRoute(g1, 0xfee01000, 0x40); err != nil {
		t.Fatal(err)
	}
	if err := vm.UpdateMSIRoute(4, 0xfee01000, 0x40); err == nil {
		t.Fatal("updating an IOAPIC pin as an MSI accepted")
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := vm.AddIrqfd(efd, g1); err != nil {
		t.Fatal(err)
	}
	if err := vm.AddIrqfd(efd, g1); err == nil {
		t.Fatal("duplicate irqfd accepted")
	}
	if err := vm.RemoveIrqfd(efd, g1); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveMSIRoute(g1); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveMSIRoute(g1); err == nil {
		t.Fatal("double remove accepted")
	}
	// The freed GSI is reused.
	if g3, err := vm.AddMSIRoute(0xfee00000, 0x32); err != nil || g3 != g1 {
		t.Fatalf("reuse: gsi %d, %v (want %d)", g3, err, g1)
	}
	// Default IOAPIC routing survives: INTx and SCI lines still work.
	if err := vm.SetIRQLevel(9, true); err != nil {
		t.Fatal(err)
	}
	vm.IRQLine(20).SetLevel(true)
	vm.IRQLine(20).SetLevel(false)
	if err := vm.SignalMSI(0xfee00000, 0x30); !errors.Is(err, ErrMSINoDest) {
		t.Fatalf("MSI with no vCPU: %v, want ErrMSINoDest", err)
	}
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := vm.SignalMSI(0xfee00000, 0x30); err != nil && !errors.Is(err, ErrMSIBlocked) {
		t.Fatalf("MSI to vCPU 0: %v", err)
	}

	match := uint64(0x1234)
	for _, pio := range []bool{true, false} {
		addr := uint64(0xd0000000)
		if pio {
			addr = 0xc040
		}
		if err := vm.AddIoeventfd(efd, addr, 2, pio, &match); err != nil {
			t.Fatal(err)
		}
		if err := vm.AddIoeventfd(efd, addr, 2, pio, &match); err == nil {
			t.Fatal("duplicate ioeventfd accepted")
		}
		if err := vm.AddIoeventfd(efd, addr+4, 0, pio, nil); err != nil {
			t.Fatal(err)
		}
		if err := vm.RemoveIoeventfd(efd, addr, 2, pio, &match); err != nil {
			t.Fatal(err)
		}
		if err := vm.RemoveIoeventfd(efd, addr+4, 0, pio, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVMMemorySlots(t *testing.T) {
	vm := newTestVM(t)
	ram, err := AllocGuestRAM(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer FreeGuestRAM(ram)
	s1, err := vm.AddMemory(0, ram[:512<<10], false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.AddMemory(256<<10, ram[512<<10:], false); err == nil {
		t.Fatal("overlapping slot accepted")
	}
	if _, err := vm.AddMemory(0x1001, ram[:4096], false); err == nil {
		t.Fatal("unaligned slot accepted")
	}
	s2, err := vm.AddMemory(1<<30, ram[512<<10:], false)
	if err != nil || s2 == s1 {
		t.Fatalf("second slot %d, %v", s2, err)
	}
	if err := vm.RemoveMemory(s1); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveMemory(s1); err == nil {
		t.Fatal("double remove accepted")
	}
	if s3, err := vm.AddMemory(0, ram[:4096], false); err != nil || s3 != s1 {
		t.Fatalf("slot id not reused: %d, %v", s3, err)
	}
	if _, err := AllocGuestRAM(123); err == nil {
		t.Fatal("unaligned RAM size accepted")
	}
}
