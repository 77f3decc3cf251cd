//go:build amd64

package pc

import (
	"bytes"
	"context"
	"testing"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/vmm"
)

// ramBARDev is a PCI function whose BAR 0 is host RAM (like ivshmem BAR 2).
type ramBARDev struct{ cfg *pci.ConfigSpace }

func (d *ramBARDev) Config() *pci.ConfigSpace { return d.cfg }

// TestRAMBARIsAMemorySlot: a RAM-backed BAR becomes a KVM memory slot
// while memory decoding is on, so the guest reads it without an exit, and
// is removed again when decoding is turned off.
func TestRAMBARIsAMemorySlot(t *testing.T) {
	testutil.NeedKVM(t)
	// mov eax, [0x100100]; mov eax, [eax]; mov dx, 0x3f8; out dx, al;
	// shr eax, 8; out dx, al; power off.
	code := concat([]byte{0xa1}, le32(0x100100), []byte{0x8b, 0x00},
		[]byte{0x66, 0xba, 0xf8, 0x03, 0xee, 0xc1, 0xe8, 0x08, 0xee}, acpiPowerOff, hlt)
	var out bytes.Buffer
	m, err := New(Config{MemoryMiB: 16, KernelBytes: pvhELF(code, 0x100000), Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ram, err := vmm.AllocGuestRAM(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer vmm.FreeGuestRAM(ram)
	copy(ram, "OK")
	dev := &ramBARDev{cfg: pci.NewConfigSpace(pci.Header{VendorID: 0x1af4, DeviceID: 0x1110, Class: 0x050000})}
	if err := dev.cfg.SetBAR(0, pci.BAR{Size: 1 << 20, RAM: ram}); err != nil {
		t.Fatal(err)
	}
	if err := m.PCI().Add(3, dev); err != nil {
		t.Fatal(err)
	}
	var addr uint64
	for _, d := range m.PCI().Devices() {
		if d.Slot == 3 {
			addr = d.BARs[0].Addr
		}
	}
	if addr < pci32Base || addr >= pci32End {
		t.Fatalf("BAR at %#x, outside the 32-bit window", addr)
	}
	m.PCI().ConfigWrite(3, 4, []byte{0x02, 0x00}) // command: memory space on
	if n := len(m.board.host.slots); n != 1 {
		t.Fatalf("%d RAM BAR slots after enabling decode", n)
	}
	if err := m.mem.PutUint32(0x100100, uint32(addr)); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Run(context.Background()); err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	if out.String() != "OK" {
		t.Fatalf("guest read %q from the RAM BAR", out.String())
	}
	if n := m.VCPUs()[0].MMIOExits.Load(); n != 0 {
		t.Fatalf("%d MMIO exits reading a RAM BAR", n)
	}
	m.PCI().ConfigWrite(3, 4, []byte{0x00, 0x00})
	if n := len(m.board.host.slots); n != 0 {
		t.Fatalf("%d RAM BAR slots after disabling decode", n)
	}
}
