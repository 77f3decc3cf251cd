package serial

import "github.com/petrel-vmm/petrel/firmware/aml"

// The PC's first serial port (IBM PC/AT assignment): eight registers at
// I/O ports 0x3f8-0x3ff, interrupt on ISA IRQ 4. machine/pc inserts the
// UART there and COMAML describes it from the same constants.
const (
	COM1Port = 0x3f8
	COM1IRQ  = 4
	// Ports is the size of the register block (regData..regSCR).
	Ports = 8
)

// COMAML returns the ACPI device of a 16550-compatible port (PNP0501) named
// name with _UID uid, decoding Ports ports from port and raising ISA irq.
func COMAML(name string, uid int, port uint16, irq uint8) aml.Term {
	return aml.Device{Path: name, Body: []aml.Term{
		aml.Name{Path: "_HID", Value: aml.EisaID("PNP0501")},
		aml.Name{Path: "_UID", Value: aml.Integer(uid)},
		aml.Name{Path: "_CRS", Value: aml.ResourceTemplate{
			aml.IO{Decode16: true, Min: port, Max: port, Length: Ports},
			aml.IRQNoFlags{irq},
		}},
	}}
}
