package acpi

import (
	"errors"
	"fmt"

	dev "github.com/petrel-vmm/petrel/devices/acpi"
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
