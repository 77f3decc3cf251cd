package acpi

import (
	"errors"
	"fmt"

	dev "github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/devices/pci"
)

// PCTablesBase is where machine/pc places the tables: the start of the BIOS
// read-only area, which Linux scans for the RSDP when no address is passed,
// reserved in the e820 map. Tables must end below PCTablesLimit.
const (
	PCTablesBase  = 0xe0000
	PCTablesLimit = 0x100000
)

// MaxCPUs is the largest CPU count: xAPIC IDs are 8-bit and 0xff is broadcast.
const MaxCPUs = 255

// PCConfig describes the machine the tables are for.
type PCConfig struct {
	// CPUs is the number of vCPUs; vCPU i has APIC ID and ACPI UID i.
	CPUs int
	// HotplugSlots has bit n set when PCI slot n is hot-pluggable: the same
	// mask machine/pc passes to devices/acpi.NewHotplug. Slot 0 (the host
	// bridge) must be clear.
	HotplugSlots uint32
	// Windows are the PCI BAR windows the host bridge's _CRS declares: the
	// ones machine/pc gives devices/pci. The zero value means
	// pci.DefaultWindows; a zero Mem64 size omits the 64-bit window.
	Windows pci.Windows
}

// checkWindows validates w against what the _CRS descriptors can say and
// the x86 PC's fixed ranges.
func checkWindows(w pci.Windows) error {
	io, m32, m64 := w.IO, w.Mem32, w.Mem64
	switch {
	case io.Size == 0 || io.Base < PCIConfigPort+PCIConfigLen || io.Base+io.Size > 0x10000:
		return fmt.Errorf("pci i/o window %#x+%#x is not within 0xd00-0xffff", io.Base, io.Size)
	case m32.Size == 0 || m32.Base+m32.Size > 1<<32 || m32.Base+m32.Size < m32.Base:
		return fmt.Errorf("pci 32-bit window %#x+%#x is not below 4 GiB", m32.Base, m32.Size)
	case m64.Size != 0 && (m64.Base < 1<<32 || m64.Base+m64.Size < m64.Base):
		return fmt.Errorf("pci 64-bit window %#x+%#x is not above 4 GiB", m64.Base, m64.Size)
	}
	return nil
}

// Tables are the PC's ACPI tables before placement.
type Tables struct {
	DSDT []byte // complete DSDT
	MADT []byte // complete MADT
}

// BuildPC builds the tables for cfg.
func BuildPC(cfg PCConfig) (*Tables, error) {
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("acpi tables for %d CPUs: want 1..%d", cfg.CPUs, MaxCPUs)
	}
	if cfg.HotplugSlots&1 != 0 {
		return nil, fmt.Errorf("acpi tables: slot 0 (host bridge) cannot be hot-pluggable: %w", dev.ErrSlotNotHotpluggable)
	}
	if cfg.Windows == (pci.Windows{}) {
		cfg.Windows = pci.DefaultWindows
	}
	if err := checkWindows(cfg.Windows); err != nil {
		return nil, fmt.Errorf("acpi tables: %w", err)
	}
	dsdt, err := DefinitionBlock("DSDT", dsdtTerms(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("building DSDT: %w", err)
	}
	return &Tables{DSDT: dsdt, MADT: madt(cfg.CPUs)}, nil
}

// ErrTablesTooBig is returned by Place when the tables do not fit.
var ErrTablesTooBig = errors.New("acpi tables do not fit below the limit")

// Layout says where Place put each table (guest-physical addresses).
type Layout struct {
	RSDP, XSDT, FACS, FADT, DSDT, MADT uint64
}

// Place lays the tables out at guest-physical base (16-byte aligned) in the
// order RSDP, XSDT, FACS (64-byte aligned), FADT, DSDT, MADT, fixes every
// pointer and checksum, and returns the blob to copy to base and the RSDP
// address (= base). limit is the first address the blob must not reach
// (PCTablesLimit for the BIOS area); 0 means the 4 GiB line, which the
// FADT's 32-bit DSDT and FACS pointers require anyway.
func (t *Tables) Place(base, limit uint64) (blob []byte, rsdpAddr uint64, err error) {
	blob, l, err := t.PlaceLayout(base, limit)
	return blob, l.RSDP, err
}

// PlaceLayout is Place returning every table's address.
func (t *Tables) PlaceLayout(base, limit uint64) ([]byte, Layout, error) {
	if base%16 != 0 {
		return nil, Layout{}, fmt.Errorf("placing acpi tables at %#x: base is not 16-byte aligned", base)
	}
	if limit == 0 || limit > 1<<32 {
		limit = 1 << 32
	}
	var l Layout
	off := uint64(0)
	alloc := func(size int, align uint64) uint64 {
		off = (off + align - 1) &^ (align - 1)
		a := base + off
		off += uint64(size)
		return a
	}
	const xsdtEntries = 2 // FADT, MADT (the DSDT hangs off the FADT)
	l.RSDP = alloc(36, 16)
	l.XSDT = alloc(headerLen+8*xsdtEntries, 16)
	l.FACS = alloc(64, 64)
	l.FADT = alloc(fadtLen, 16)
	l.DSDT = alloc(len(t.DSDT), 16)
	l.MADT = alloc(len(t.MADT), 16)
	if base >= limit || off > limit-base {
		return nil, Layout{}, fmt.Errorf("placing %d bytes of acpi tables at %#x below %#x: %w", off, base, limit, ErrTablesTooBig)
	}
	blob := make([]byte, off)
	put := func(addr uint64, b []byte) { copy(blob[addr-base:], b) }
	put(l.RSDP, rsdp(l.XSDT))
	put(l.XSDT, xsdt([]uint64{l.FADT, l.MADT}))
	put(l.FACS, facs())
	put(l.FADT, fadt(l.FACS, l.DSDT))
	put(l.DSDT, t.DSDT)
	put(l.MADT, t.MADT)
	return blob, l, nil
}
