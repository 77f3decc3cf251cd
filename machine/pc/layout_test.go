//go:build amd64

package pc

import (
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/vmm"
)

// testWindows are the windows of a 256 MiB machine on a 40-bit CPU.
func testWindows(t testing.TB) pci.Windows {
	t.Helper()
	w, err := pciWindows(256<<20, 40)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestPCI64WindowFitsPhysBits: the 64-bit BAR window starts where QEMU's
// pci-hole64 does (4 GiB, or the end of RAM above it rounded up to 1 GiB)
// and ends within the CPU's physical address width, so a 40-bit guest
// (QEMU's TCG default) can address every BAR; at 1 TiB it could not.
func TestPCI64WindowFitsPhysBits(t *testing.T) {
	for _, c := range []struct {
		ramEnd     uint64
		bits       uint
		base, size uint64
	}{
		{256 << 20, 40, 4 << 30, 32 << 30},
		{3 << 30, 40, 4 << 30, 32 << 30},
		{(4 << 30) + (5 << 30) + 1, 40, 10 << 30, 32 << 30},
		{256 << 20, 36, 4 << 30, 32 << 30},
		{40 << 30, 36, 40 << 30, 24 << 30}, // cut at 64 GiB
		{256 << 20, 48, 4 << 30, 32 << 30},
	} {
		w, err := pciWindows(c.ramEnd, c.bits)
		if err != nil {
			t.Fatalf("ram end %#x, %d bits: %v", c.ramEnd, c.bits, err)
		}
		if w.Mem64.Base != c.base || w.Mem64.Size != c.size {
			t.Errorf("ram end %#x, %d bits: window %#x+%#x, want %#x+%#x", c.ramEnd, c.bits, w.Mem64.Base, w.Mem64.Size, c.base, c.size)
		}
		if end := w.Mem64.Base + w.Mem64.Size; end > 1<<c.bits {
			t.Errorf("ram end %#x: window ends at %#x, beyond the %d-bit limit", c.ramEnd, end, c.bits)
		}
	}
	if _, err := pciWindows(64<<30-256<<20, 36); err == nil || !strings.Contains(err.Error(), "36-bit") {
		t.Fatalf("no room below 64 GiB: err %v, want the phys-bits error", err)
	}
}

// TestPhysBitsFromCPUID reads CPUID 0x80000008 EAX[7:0], 36 without it.
func TestPhysBitsFromCPUID(t *testing.T) {
	if b := physBits([]vmm.CPUIDEntry{{Function: 0x80000008, EAX: 0x3028}}); b != 40 {
		t.Fatalf("phys bits %d, want 40", b)
	}
	if b := physBits([]vmm.CPUIDEntry{{Function: 1}}); b != 36 {
		t.Fatalf("phys bits %d without the leaf, want 36", b)
	}
}
