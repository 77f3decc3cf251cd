package acpi

import "encoding/binary"

// MADT (ACPI 6.x section 5.2.12), revision 4.
const madtRevision = 4

// MPS INTI flags (table 5-49).
const (
	intiActiveHigh = 1
	intiLevel      = 3 << 2
)

// madt returns the MADT: a Local APIC per CPU (processor UID and APIC ID
// = CPU index), the IOAPIC at GSI base 0, the overrides IRQ0 -> GSI2 (the PIT
// on IOAPIC pin 2) and the SCI level / active high, and LINT1 as NMI on
// every processor.
func madt(c *PCConfig) []byte {
	t := newTable("APIC", headerLen+8, madtRevision)
	le := binary.LittleEndian
	le.PutUint32(t[36:], c.LocalAPIC)
	le.PutUint32(t[40:], 1) // PCAT_COMPAT: dual 8259s are present (KVM's PIC)
	for i := 0; i < c.CPUs; i++ {
		// Processor Local APIC: type 0, length 8, UID, APIC ID, flags (enabled).
		t = append(t, 0, 8, byte(i), byte(i), 1, 0, 0, 0)
	}
	// I/O APIC: type 1, length 12, ID, reserved, address, GSI base.
	io := []byte{1, 12, c.IOAPICID, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	le.PutUint32(io[4:], c.IOAPIC)
	t = append(t, io...)
	// Interrupt Source Override: type 2, length 10, bus 0 (ISA), source, GSI, flags.
	iso := func(irq byte, gsi uint32, flags uint16) {
		o := []byte{2, 10, 0, irq, 0, 0, 0, 0, 0, 0}
		le.PutUint32(o[4:], gsi)
		le.PutUint16(o[8:], flags)
		t = append(t, o...)
	}
	iso(0, 2, 0)
	iso(c.SCI, uint32(c.SCI), intiActiveHigh|intiLevel)
	// Local APIC NMI: type 4, length 6, UID 0xff (all), flags 0, LINT1.
	t = append(t, 4, 6, 0xff, 0, 0, 1)
	finishTable(t)
	return t
}
