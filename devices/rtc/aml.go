package rtc

import "github.com/petrel-vmm/petrel/firmware/aml"

// The PC's CMOS RTC (IBM PC/AT assignment): index port 0x70, data port
// 0x71, interrupt on ISA IRQ 8. machine/pc inserts the CMOS there and AML
// describes it from the same constants.
const (
	Port  = 0x70
	Ports = 2
	IRQ   = 8
)

// AML returns the RTC's ACPI device, RTC (PNP0B00, an AT real-time clock),
// to be placed in \_SB.
func AML() aml.Term {
	return aml.Device{Path: "RTC", Body: []aml.Term{
		aml.Name{Path: "_HID", Value: aml.EisaID("PNP0B00")},
		aml.Name{Path: "_CRS", Value: aml.ResourceTemplate{
			aml.IO{Decode16: true, Min: Port, Max: Port, Length: Ports},
			aml.IRQNoFlags{IRQ},
		}},
	}}
}
