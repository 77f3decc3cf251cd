package i8042

import "github.com/petrel-vmm/petrel/firmware/aml"

// AML returns the keyboard controller's ACPI device, KBD (PNP0303, an
// IBM enhanced keyboard controller): the data and command ports and the
// keyboard's ISA IRQ.
func AML() aml.Term {
	return aml.Device{Path: "KBD", Body: []aml.Term{
		aml.Name{Path: "_HID", Value: aml.EisaID("PNP0303")},
		aml.Name{Path: "_CRS", Value: aml.ResourceTemplate{
			aml.IO{Decode16: true, Min: DataPort, Max: DataPort, Length: 1},
			aml.IO{Decode16: true, Min: CommandPort, Max: CommandPort, Length: 1},
			aml.IRQNoFlags{IRQ},
		}},
	}}
}
