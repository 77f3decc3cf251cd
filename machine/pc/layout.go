//go:build amd64

package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmm"

	"github.com/petrel-vmm/petrel/devices/pci"
)

// Guest-physical layout (docs/ARCHITECTURE.md "x86 PC memory map").
const (
	lowRAMMax   = 3 << 30 // RAM below the PCI hole ends at 3 GiB
	highRAMBase = 4 << 30 // the rest of RAM starts at 4 GiB

	// Low-memory boot structures, all below the EBDA.
	gdtAddr        = 0x500
	pvhStartInfo   = 0x6000
	pvhMemmapAddr  = 0x6100 // up to 64 entries of 24 bytes
	pvhModlistAddr = 0x6800
	zeroPageAddr   = 0x7000 // Linux boot_params
	pml4Addr       = 0x9000
	pdptAddr       = 0xa000
	pdAddr         = 0xb000 // four page directories: 0xb000-0xefff map 4 GiB
	cmdlineAddr    = 0x20000
	cmdlineMax     = 0x10000
	bootStackTop   = 0x8ff0

	ebdaStart = 0x9fc00 // reserved: EBDA, VGA hole, BIOS area (ACPI tables live here)
	biosEnd   = 0x100000

	kernelAddr = 0x100000 // bzImage protected-mode code (code32_start)

	// Reserved MMIO above the 32-bit PCI window: IOAPIC, LAPIC, and the
	// pages KVM needs for its TSS and identity map (below 4 GiB, not RAM).
	// The MADT gives the guest ioapicBase and lapicBase (writeACPI, tablesConfig).
	ioapicBase      = 0xfec00000
	lapicBase       = 0xfee00000
	reservedHighLow = 0xfc000000
	identityMapAddr = 0xfeffc000
	tssAddr         = 0xfeffd000
	// ioapicID is the ID KVM's in-kernel IOAPIC reports at reset.
	ioapicID = 0

	// The PCI BAR windows: the 32-bit one fills the hole between low RAM
	// and the reserved MMIO, the 64-bit one follows RAM (pci64Window), the
	// I/O one is the top quarter of port space.
	pci32Base = 0xc0000000
	pci32End  = reservedHighLow
	pciIOBase = 0xc000
	pciIOEnd  = 0x10000
	// pci64Size is QEMU's default pci-hole64-size (32 GiB); pci64Align
	// is its alignment of the hole's start.
	pci64Size  = 32 << 30
	pci64Align = 1 << 30
	// defaultPhysBits is the physical address width of a CPU without
	// CPUID leaf 0x80000008 (Intel SDM vol. 3A, 4.1.4: MAXPHYADDR 36).
	defaultPhysBits = 36
)

// pciWindows are the PCI BAR windows of a machine whose RAM ends at
// ramEnd and whose CPU addresses physBits bits: the bus assigns BARs from
// them and the host bridge's _CRS declares them (pci.Bus.AML), one
// definition for both.
func pciWindows(ramEnd uint64, physBits uint) (pci.Windows, error) {
	m64, err := pci64Window(ramEnd, physBits)
	return pci.Windows{
		IO:    pci.Window{Base: pciIOBase, Size: pciIOEnd - pciIOBase},
		Mem32: pci.Window{Base: pci32Base, Size: pci32End - pci32Base},
		Mem64: m64,
	}, err
}

// pci64Window places the 64-bit BAR window as QEMU's pc machine places
// pci-hole64 (pc_pci_hole64_start): at 4 GiB or the end of RAM above it,
// rounded up to 1 GiB, 32 GiB long. A guest cannot reach addresses at or
// above 2^physBits (the PTE bits above MAXPHYADDR are reserved, so Linux
// reports such BARs "not CPU addressable"), so the window is cut to end
// there; one shorter than 1 GiB is an error, as QEMU refuses to start
// when its hole does not fit the CPU's phys-bits.
func pci64Window(ramEnd uint64, physBits uint) (pci.Window, error) {
	base := max(ramEnd, highRAMBase)
	base = (base + pci64Align - 1) &^ (pci64Align - 1)
	limit := uint64(1) << physBits
	size := uint64(pci64Size)
	if base+size > limit {
		if limit < base+pci64Align {
			return pci.Window{}, fmt.Errorf("the 64-bit PCI window at %#x does not fit below the CPU's %d-bit physical address limit %#x (less RAM, or a CPU with more phys-bits)", base, physBits, limit)
		}
		size = limit - base
	}
	return pci.Window{Base: base, Size: size}, nil
}

// physBits reads the physical address width from CPUID leaf 0x80000008
// EAX[7:0] of the entries the guest is given.
func physBits(es []vmm.CPUIDEntry) uint {
	for _, e := range es {
		if e.Function == 0x80000008 && e.EAX&0xff != 0 {
			return uint(e.EAX & 0xff)
		}
	}
	return defaultPhysBits
}

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3
)

// E820Entry is one BIOS memory map entry.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// ramLayout splits size bytes of RAM into the low region (below 3 GiB)
// and the high region (from 4 GiB).
func ramLayout(size uint64) (low, high uint64) {
	if size <= lowRAMMax {
		return size, 0
	}
	return lowRAMMax, size - lowRAMMax
}

// e820Map is the memory map handed to the guest: usable RAM below the EBDA,
// the reserved EBDA/BIOS area (ACPI tables live there), RAM from 1 MiB, the
// reserved IOAPIC/LAPIC/KVM pages below 4 GiB, and RAM above 4 GiB. The
// 32-bit PCI window stays unlisted so the guest may use it for BARs.
func e820Map(size uint64) ([]E820Entry, error) {
	low, high := ramLayout(size)
	if low < 2<<20 {
		return nil, fmt.Errorf("guest memory %d KiB: need at least 2 MiB", size>>10)
	}
	m := []E820Entry{
		{0, ebdaStart, E820RAM},
		{ebdaStart, biosEnd - ebdaStart, E820Reserved},
		{biosEnd, low - biosEnd, E820RAM},
		{reservedHighLow, 1<<32 - reservedHighLow, E820Reserved},
	}
	if high > 0 {
		m = append(m, E820Entry{highRAMBase, high, E820RAM})
	}
	return m, nil
}
