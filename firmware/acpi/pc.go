package acpi

import (
	"errors"
	"fmt"

	"github.com/petrel-vmm/petrel/firmware/aml"
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

// IOBlock is a fixed-feature register block in I/O space (a FADT *_BLK
// address and its *_LEN).
type IOBlock struct {
	Port uint16
	Len  uint8
}

// PCConfig describes the machine the tables are for. This package defines
// none of its values: machine/pc fills it from its memory map and from the
// constants of the devices that decode the registers (devices/acpi, i8042),
// and collects the DSDT's content from the devices' own AML.
type PCConfig struct {
	// CPUs is the number of vCPUs; vCPU i has APIC ID and ACPI UID i.
	CPUs int
	// LocalAPIC and IOAPIC are the interrupt controllers' MMIO addresses
	// (MADT), IOAPICID the IOAPIC's ID.
	LocalAPIC, IOAPIC uint32
	IOAPICID          uint8
	// SCI is the ISA IRQ of the SCI, identity-mapped to a GSI and
	// overridden to level / active high in the MADT (FADT SCI_INT).
	SCI uint8
	// The PM1a event, PM1a control, PM timer and GPE0 blocks (FADT).
	// ACPI 6.x section 4.8.3 fixes PM1_EVT_LEN >= 4, PM1_CNT_LEN >= 2,
	// PM_TMR_LEN = 4 and GPE0_BLK_LEN a multiple of 2 (status, enable).
	PM1aEvent, PM1aControl, PMTimer, GPE0 IOBlock
	// ResetPort and ResetValue are the FADT's RESET_REG (one byte in I/O
	// space) and RESET_VALUE.
	ResetPort  uint16
	ResetValue uint8
	// DSDT is the content of the DSDT.
	DSDT []aml.Term
}

// check validates the values the FADT and MADT encode.
func (c *PCConfig) check() error {
	switch {
	case c.CPUs < 1 || c.CPUs > MaxCPUs:
		return fmt.Errorf("%d CPUs: want 1..%d", c.CPUs, MaxCPUs)
	case c.PM1aEvent.Len < 4 || c.PM1aEvent.Len%2 != 0:
		return fmt.Errorf("PM1a event block of %d bytes: want an even length of at least 4", c.PM1aEvent.Len)
	case c.PM1aControl.Len < 2:
		return fmt.Errorf("PM1a control block of %d bytes: want at least 2", c.PM1aControl.Len)
	case c.PMTimer.Len != 4:
		return fmt.Errorf("PM timer block of %d bytes: want 4", c.PMTimer.Len)
	case c.GPE0.Len == 0 || c.GPE0.Len%2 != 0:
		return fmt.Errorf("GPE0 block of %d bytes: want a non-zero even length", c.GPE0.Len)
	case c.LocalAPIC == 0 || c.IOAPIC == 0:
		return errors.New("local APIC or IOAPIC address is 0")
	}
	return nil
}

// Tables are the PC's ACPI tables before placement.
type Tables struct {
	DSDT []byte // complete DSDT
	MADT []byte // complete MADT
	cfg  PCConfig
}

// BuildPC builds the tables for cfg.
func BuildPC(cfg PCConfig) (*Tables, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("acpi tables: %w", err)
	}
	dsdt, err := DefinitionBlock("DSDT", cfg.DSDT...)
	if err != nil {
		return nil, fmt.Errorf("building DSDT: %w", err)
	}
	return &Tables{DSDT: dsdt, MADT: madt(&cfg), cfg: cfg}, nil
}

// ProcessorsAML returns a processor device (ACPI0007) for each of cpus
// vCPUs, to be placed in \_SB: C000, C001, ... with _UID i, the UID the
// MADT gives vCPU i's Local APIC entry.
func ProcessorsAML(cpus int) []aml.Term {
	devs := make([]aml.Term, 0, cpus)
	for i := 0; i < cpus; i++ {
		devs = append(devs, aml.Device{Path: fmt.Sprintf("C%03X", i), Body: []aml.Term{
			aml.Name{Path: "_HID", Value: aml.String("ACPI0007")},
			aml.Name{Path: "_UID", Value: aml.Integer(i)},
		}})
	}
	return devs
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
	put(l.FADT, fadt(&t.cfg, l.FACS, l.DSDT))
	put(l.DSDT, t.DSDT)
	put(l.MADT, t.MADT)
	return blob, l, nil
}
