package acpi

import (
	"fmt"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/firmware/aml"
)

// The DSDT objects of this package's devices, built from the constants in
// ports.go that the devices themselves decode: machine/pc collects them into
// the DSDT. The objects and their names are those of QEMU's PIIX4 DSDT, which
// Linux's acpiphp driver is known to handle.

// Names of the hotplug registers as fields of the PCST operation region,
// which lives in the host bridge's device (pci.BridgePath). Their order is
// the registers' order (HotplugUpOffset ... HotplugRemovableOffset).
const (
	hotplugRegion  = "PCST"
	fieldUp        = "PCIU"
	fieldDown      = "PCID"
	fieldEject     = "B0EJ"
	fieldRemovable = "PCRM"
)

// powerButtonPath is the control-method power button (ACPI 6.x section
// 4.8.2.2.1.2); the FADT's PWR_BUTTON flag says there is no fixed one.
const powerButtonPath = `\_SB.PWRB`

// Notify values (ACPI 6.x table 5.166, "Device Object Notification Values").
const (
	notifyDeviceCheck  = 1    // a device may have appeared in the slot
	notifyEjectRequest = 3    // the platform asks the OS to eject the slot
	notifyPowerButton  = 0x80 // power button pressed (section 4.8.3.1.1)
)

// gpeHandler returns \_GPE's handler of GPE0 bit: _Exx, xx the bit number
// in hex (ACPI 6.x section 5.6.4.1.1; E: the OS clears the status bit
// before running it, as for an edge event).
func gpeHandler(bit int, body []aml.Term) aml.Term {
	return aml.Method{Path: fmt.Sprintf("_E%02X", bit), Body: body}
}

// BridgeAML implements pci.SlotDescriber: the controller's registers as an
// operation region with one 32-bit field each, read and written as whole
// DWords (acpi_pci_hotplug.txt allows only 4-byte access).
func (h *Hotplug) BridgeAML() []aml.Term {
	return []aml.Term{
		aml.OperationRegion{Name: hotplugRegion, Space: aml.SystemIO, Offset: aml.Integer(HotplugBase), Length: aml.Integer(HotplugLen)},
		aml.Field{Region: hotplugRegion, Access: aml.DWordAcc, Update: aml.WriteAsZeros, Units: []aml.FieldUnit{
			{Name: fieldUp, Bits: 32}, {Name: fieldDown, Bits: 32}, {Name: fieldEject, Bits: 32}, {Name: fieldRemovable, Bits: 32},
		}},
	}
}

// SlotAML implements pci.SlotDescriber. _RMV reads the removable register
// for every slot; only hot-pluggable slots get _EJ0, because an OS offers to
// eject any device that has one while the controller ignores eject bits of
// fixed slots.
func (h *Hotplug) SlotAML(slot int) []aml.Term {
	bit := aml.Integer(1) << uint(slot)
	terms := []aml.Term{
		aml.Method{Path: "_RMV", Body: []aml.Term{
			aml.If{
				Predicate: aml.LEqual{A: aml.And{A: aml.Path(fieldRemovable), B: bit}, B: bit},
				Then:      []aml.Term{aml.Return{Value: aml.One}},
				Else:      []aml.Term{aml.Return{Value: aml.Zero}},
			},
		}},
	}
	if h.removable&(1<<uint(slot)) != 0 {
		// _EJ0(Arg0): writing the slot's bit to the eject register.
		terms = append(terms, aml.Method{Path: "_EJ0", Args: 1, Body: []aml.Term{
			aml.Store{Source: bit, Dest: aml.Path(fieldEject)},
		}})
	}
	return terms
}

// GPEAML returns \_GPE._E01, run when the controller raises GPEPCIHotplug:
// it reads the up and down registers once and notifies every hot-pluggable
// slot with a pending insertion (Device Check) or removal (Eject Request).
func (h *Hotplug) GPEAML() aml.Term {
	up, down := aml.Local0, aml.Local1
	body := []aml.Term{
		aml.Store{Source: aml.Path(pci.BridgePath + "." + fieldUp), Dest: up},
		aml.Store{Source: aml.Path(pci.BridgePath + "." + fieldDown), Dest: down},
	}
	for s := 1; s < HotplugSlots; s++ {
		if h.removable&(1<<uint(s)) == 0 {
			continue
		}
		bit := aml.Integer(1) << uint(s)
		slot := aml.Path(pci.BridgePath + "." + pci.SlotName(s))
		body = append(body,
			aml.If{Predicate: aml.And{A: up, B: bit}, Then: []aml.Term{aml.Notify{Object: slot, Value: aml.Integer(notifyDeviceCheck)}}},
			aml.If{Predicate: aml.And{A: down, B: bit}, Then: []aml.Term{aml.Notify{Object: slot, Value: aml.Integer(notifyEjectRequest)}}},
		)
	}
	return gpeHandler(GPEPCIHotplug, body)
}

// PowerButtonAML returns \_SB.PWRB (to be placed in \_SB): a PNP0C0C
// control-method power button.
func PowerButtonAML() aml.Term {
	return aml.Device{Path: powerButtonPath[len(`\_SB.`):], Body: []aml.Term{
		aml.Name{Path: "_HID", Value: aml.EisaID("PNP0C0C")},
		aml.Name{Path: "_UID", Value: aml.Zero},
	}}
}

// PowerButtonGPEAML returns \_GPE._E02, run when GPEPowerButton is raised
// (QMP system_powerdown): it notifies the power button, and the OS shuts
// down and enters S5.
func PowerButtonGPEAML() aml.Term {
	return gpeHandler(GPEPowerButton, []aml.Term{
		aml.Notify{Object: aml.Path(powerButtonPath), Value: aml.Integer(notifyPowerButton)},
	})
}

// SleepStatesAML returns \_S5, the only sleep state the PM block
// implements: Package{SLP_TYPa, SLP_TYPb, reserved, reserved} (ACPI 6.x
// section 7.4.2), SLP_TYP = S5SleepType.
func SleepStatesAML() aml.Term {
	return aml.Name{Path: `\_S5`, Value: aml.Package{aml.Integer(S5SleepType), aml.Integer(S5SleepType), aml.Zero, aml.Zero}}
}

var _ pci.SlotDescriber = (*Hotplug)(nil)
