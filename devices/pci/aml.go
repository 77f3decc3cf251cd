package pci

import (
	"fmt"

	"github.com/petrel-vmm/petrel/firmware/aml"
)

// The host bridge describes bus 0 to the guest's ACPI (ACPI 6.x section
// 6.1.1 _ADR and 6.2.13 _PRT; PCI Firmware Specification 3.x section 4.5):
// a PNP0A03 device whose _PRT routes each slot's INTA# to INTxGSI(slot) and
// whose _CRS declares bus 0, the configuration ports and the bus's BAR
// windows, with one child device per slot.
const (
	bridgeName = "PCI0"
	// BridgePath is the host bridge's path in the ACPI namespace.
	BridgePath = `\_SB.` + bridgeName
)

// SlotName is the ACPI name of slot's device under BridgePath: "S" and
// the slot number in two hex digits, as QEMU names them.
func SlotName(slot int) string { return fmt.Sprintf("S%02X", slot) }

// SlotDescriber adds objects to the host bridge's description. The hotplug
// controller (devices/acpi) is one: its register fields go on the bridge
// and _RMV/_EJ0 in each slot.
type SlotDescriber interface {
	// BridgeAML returns objects for the bridge device, placed after _CRS.
	BridgeAML() []aml.Term
	// SlotAML returns objects for slot's device (1..NumSlots-1), placed
	// after _ADR and _SUN.
	SlotAML(slot int) []aml.Term
}

// AML returns the host bridge device (Device(PCI0), to be placed in \_SB)
// with a child for every slot but 0 (the bridge itself); ext, if not nil,
// adds its objects. A window that _CRS cannot declare (Windows.Check) is an
// encoding error.
func (b *Bus) AML(ext SlotDescriber) aml.Term {
	prt := make(aml.Package, 0, NumSlots)
	for s := 0; s < NumSlots; s++ {
		// {Address (slot, any function), Pin (0 = INTA#), Source (0 = the
		// fourth element is a GSI), Source Index (the GSI)}: 6.2.13.
		prt = append(prt, aml.Package{aml.Integer(s<<16 | 0xffff), aml.Zero, aml.Zero, aml.Integer(INTxGSI(s))})
	}
	body := []aml.Term{
		aml.Name{Path: "_HID", Value: aml.EisaID("PNP0A03")}, // no _ADR: a device has _HID or _ADR, not both
		aml.Name{Path: "_UID", Value: aml.Zero},
		aml.Name{Path: "_BBN", Value: aml.Zero},
		aml.Name{Path: "_PRT", Value: prt},
		aml.Name{Path: "_CRS", Value: bridgeCRS(b.windows)},
	}
	if ext != nil {
		body = append(body, ext.BridgeAML()...)
	}
	for s := 1; s < NumSlots; s++ {
		slot := []aml.Term{
			aml.Name{Path: "_ADR", Value: aml.Integer(s << 16)}, // device s, function 0
			aml.Name{Path: "_SUN", Value: aml.Integer(s)},       // slot user number (6.1.12)
		}
		if ext != nil {
			slot = append(slot, ext.SlotAML(s)...)
		}
		body = append(body, aml.Device{Path: SlotName(s), Body: slot})
	}
	return aml.Device{Path: bridgeName, Body: body}
}

// bridgeCRS is the host bridge's _CRS: it produces bus numbers 0-255, the
// configuration ports, the legacy I/O range below them, and the windows.
type bridgeCRS Windows

// AppendAML implements aml.Object. The windows are checked first; an
// invalid one fails the encoder rather than emitting a _CRS the guest's
// allocator would trust.
func (w bridgeCRS) AppendAML(e *aml.Encoder) {
	if err := Windows(w).Check(); err != nil {
		e.Fail(fmt.Errorf("pci host bridge _CRS: %w", err))
		return
	}
	producer := aml.AddressFlags{MinFixed: true, MaxFixed: true} // ResourceProducer, PosDecode
	mem := aml.MemoryFlags{Cache: aml.NonCacheable, ReadWrite: true}
	crs := aml.ResourceTemplate{
		aml.WordBusNumber{AddressFlags: producer, Min: 0, Max: 0xff, Length: 0x100},
		aml.IO{Decode16: true, Min: ConfigPort, Max: ConfigPort, Align: 1, Length: ConfigLen},
		aml.WordIO{AddressFlags: producer, ISARanges: aml.EntireRange, Min: 0, Max: ConfigPort - 1, Length: ConfigPort},
		aml.WordIO{AddressFlags: producer, ISARanges: aml.EntireRange, Min: uint16(w.IO.Base),
			Max: uint16(w.IO.Base + w.IO.Size - 1), Length: uint16(w.IO.Size)},
		aml.DWordMemory{AddressFlags: producer, MemoryFlags: mem,
			Min: uint32(w.Mem32.Base), Max: uint32(w.Mem32.Base + w.Mem32.Size - 1), Length: uint32(w.Mem32.Size)},
	}
	if w.Mem64.Size != 0 {
		crs = append(crs, aml.QWordMemory{AddressFlags: producer, MemoryFlags: mem,
			Min: w.Mem64.Base, Max: w.Mem64.Base + w.Mem64.Size - 1, Length: w.Mem64.Size})
	}
	crs.AppendAML(e)
}
