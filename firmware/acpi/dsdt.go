package acpi

import (
	"fmt"

	dev "github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/devices/pci"
)

// The PCI host bridge's fixed resources (docs/ARCHITECTURE.md). Its BAR
// windows are the devices/pci.Windows the BAR allocator uses (PCConfig.Windows).
const (
	PCIConfigPort = 0xcf8
	PCIConfigLen  = 8
	// PCIIntxBaseGSI: slot s's INTA is IOAPIC GSI PCIIntxBaseGSI + s%8.
	PCIIntxBaseGSI = 16
)

// Legacy devices the DSDT describes (docs/ARCHITECTURE.md).
const (
	com1Port, com1IRQ   = 0x3f8, 4
	rtcPort, rtcIRQ     = 0x70, 8
	i8042Data, i8042Cmd = 0x60, 0x64
	kbdIRQ              = 1
)

// Hotplug register field names in \_SB.PCI0 (operation region PCST).
const (
	fieldUp        = "PCIU"
	fieldDown      = "PCID"
	fieldEject     = "B0EJ"
	fieldRemovable = "PCRM"
)

// Object paths.
const (
	pci0Path = `\_SB.PCI0`
	pwrbPath = `\_SB.PWRB`
)

// Notify values (ACPI 6.x table 5-166).
const (
	notifyDeviceCheck  = 1
	notifyEjectRequest = 3
	notifyPowerButton  = 0x80
)

func slotName(slot int) string { return fmt.Sprintf("S%02X", slot) }

// dsdtTerms returns the PC DSDT: \_SB.PCI0 with its slots, the hotplug
// registers and GPE handlers, the power button, COM1, RTC, keyboard
// controller, processor devices and \_S5.
func dsdtTerms(cfg PCConfig) []Term {
	sb := []Term{pci0(cfg),
		Device{"PWRB", []Term{
			Name{"_HID", EisaID("PNP0C0C")},
			Name{"_UID", Zero},
		}},
		Device{"COM1", []Term{
			Name{"_HID", EisaID("PNP0501")},
			Name{"_UID", One},
			Name{"_CRS", ResourceTemplate{
				IO{Decode16: true, Min: com1Port, Max: com1Port, Length: 8},
				IRQNoFlags{com1IRQ},
			}},
		}},
		Device{"RTC", []Term{
			Name{"_HID", EisaID("PNP0B00")},
			Name{"_CRS", ResourceTemplate{
				IO{Decode16: true, Min: rtcPort, Max: rtcPort, Length: 2},
				IRQNoFlags{rtcIRQ},
			}},
		}},
		Device{"KBD", []Term{
			Name{"_HID", EisaID("PNP0303")},
			Name{"_CRS", ResourceTemplate{
				IO{Decode16: true, Min: i8042Data, Max: i8042Data, Length: 1},
				IO{Decode16: true, Min: i8042Cmd, Max: i8042Cmd, Length: 1},
				IRQNoFlags{kbdIRQ},
			}},
		}},
	}
	for i := 0; i < cfg.CPUs; i++ {
		// Processor devices; _UID matches the MADT's ACPI processor UID.
		sb = append(sb, Device{fmt.Sprintf("C%03X", i), []Term{
			Name{"_HID", String("ACPI0007")},
			Name{"_UID", Integer(i)},
		}})
	}
	return []Term{
		Scope{`\_SB`, sb},
		Scope{`\_GPE`, gpeMethods(cfg)},
		// SLP_TYPa, SLP_TYPb, reserved, reserved.
		Name{`\_S5`, Package{Integer(dev.S5SleepType), Integer(dev.S5SleepType), Zero, Zero}},
	}
}

// pci0 returns the host bridge device.
func pci0(cfg PCConfig) Term {
	prt := make(Package, 0, pci.NumSlots)
	for s := 0; s < pci.NumSlots; s++ {
		// {address (slot, any function), pin (0 = INTA), source (0 = GSI), GSI}
		prt = append(prt, Package{Integer(s<<16 | 0xffff), Zero, Zero, Integer(PCIIntxBaseGSI + s%8)})
	}
	bridge := AddressFlags{MinFixed: true, MaxFixed: true} // ResourceProducer, PosDecode
	w := cfg.Windows
	crs := ResourceTemplate{
		WordBusNumber{AddressFlags: bridge, Min: 0, Max: 0xff, Length: 0x100},
		IO{Decode16: true, Min: PCIConfigPort, Max: PCIConfigPort, Align: 1, Length: PCIConfigLen},
		WordIO{AddressFlags: bridge, ISARanges: EntireRange, Min: 0, Max: PCIConfigPort - 1, Length: PCIConfigPort},
		WordIO{AddressFlags: bridge, ISARanges: EntireRange, Min: uint16(w.IO.Base),
			Max: uint16(w.IO.Base + w.IO.Size - 1), Length: uint16(w.IO.Size)},
		DWordMemory{AddressFlags: bridge, MemoryFlags: MemoryFlags{Cache: NonCacheable, ReadWrite: true},
			Min: uint32(w.Mem32.Base), Max: uint32(w.Mem32.Base + w.Mem32.Size - 1), Length: uint32(w.Mem32.Size)},
	}
	if w.Mem64.Size != 0 {
		crs = append(crs, QWordMemory{AddressFlags: bridge, MemoryFlags: MemoryFlags{Cache: NonCacheable, ReadWrite: true},
			Min: w.Mem64.Base, Max: w.Mem64.Base + w.Mem64.Size - 1, Length: w.Mem64.Size})
	}
	body := []Term{
		Name{"_HID", EisaID("PNP0A03")}, // no _ADR: a device has _HID or _ADR, not both
		Name{"_UID", Zero},
		Name{"_BBN", Zero},
		Name{"_PRT", prt},
		Name{"_CRS", crs},
		// The hotplug controller's registers, 4-byte access (acpi_pci_hotplug.txt).
		OperationRegion{"PCST", SystemIO, Integer(dev.HotplugBase), Integer(dev.HotplugLen)},
		Field{Region: "PCST", Access: DWordAcc, Update: WriteAsZeros, Units: []FieldUnit{
			{fieldUp, 32}, {fieldDown, 32}, {fieldEject, 32}, {fieldRemovable, 32},
		}},
	}
	for s := 1; s < dev.HotplugSlots; s++ {
		body = append(body, slotDevice(s, cfg.HotplugSlots&(1<<uint(s)) != 0))
	}
	return Device{"PCI0", body}
}

// slotDevice returns \_SB.PCI0.Sxx. Only hot-pluggable slots get _EJ0 (an
// OS offers to eject any device with _EJ0, and the controller ignores eject
// bits of fixed slots); _RMV reads the removable register either way.
func slotDevice(slot int, hotpluggable bool) Term {
	bit := Integer(1) << uint(slot)
	body := []Term{
		Name{"_ADR", Integer(slot << 16)},
		Name{"_SUN", Integer(slot)},
		Method{Path: "_RMV", Body: []Term{
			If{
				Predicate: LEqual{And{A: Path(fieldRemovable), B: bit}, bit},
				Then:      []Term{Return{One}},
				Else:      []Term{Return{Zero}},
			},
		}},
	}
	if hotpluggable {
		body = append(body, Method{Path: "_EJ0", Args: 1, Body: []Term{
			Store{bit, Path(fieldEject)},
		}})
	}
	return Device{slotName(slot), body}
}

// gpeMethods returns \_GPE's event handlers, one per GPE0 bit in use.
func gpeMethods(cfg PCConfig) []Term {
	up, down := Local0, Local1
	e01 := []Term{
		Store{Path(pci0Path + "." + fieldUp), up},
		Store{Path(pci0Path + "." + fieldDown), down},
	}
	for s := 1; s < dev.HotplugSlots; s++ {
		if cfg.HotplugSlots&(1<<uint(s)) == 0 {
			continue
		}
		bit := Integer(1) << uint(s)
		slot := Path(pci0Path + "." + slotName(s))
		e01 = append(e01,
			If{Predicate: And{A: up, B: bit}, Then: []Term{Notify{slot, Integer(notifyDeviceCheck)}}},
			If{Predicate: And{A: down, B: bit}, Then: []Term{Notify{slot, Integer(notifyEjectRequest)}}},
		)
	}
	return []Term{
		Method{Path: fmt.Sprintf("_E%02X", dev.GPEPCIHotplug), Body: e01},
		Method{Path: fmt.Sprintf("_E%02X", dev.GPEPowerButton), Body: []Term{
			Notify{Path(pwrbPath), Integer(notifyPowerButton)},
		}},
	}
}
