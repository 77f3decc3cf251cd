// Package acpi implements the ACPI devices of the x86 PC: the GPE0 block,
// the PCI hotplug controller of QEMU's PIIX4 interface
// (../shared/specs/acpi_pci_hotplug.txt), and the
// DSDT objects that drive them (aml.go).
//
// "Firmware lives with the device": the port numbers and bits below are the
// single source of truth. The devices decode them, aml.go describes them to
// the guest, machine/pc inserts the devices (and its own PM1/PM timer block)
// at the same addresses and hands them to firmware/acpi for the FADT.
package acpi

import "github.com/petrel-vmm/petrel/devices/pci"

// PM block (implemented by machine/pc, described by the FADT).
const (
	PM1aEventBase   = 0x600 // PM1a_EVT_BLK: status (2 bytes) + enable (2 bytes)
	PM1aEventLen    = 4
	PM1aControlBase = 0x604 // PM1a_CNT_BLK
	PM1aControlLen  = 2
	PMTimerBase     = 0x608 // PM_TMR_BLK: 24-bit timer at 3.579545 MHz
	PMTimerLen      = 4

	// SCIEnable is PM1_CNT bit 0 (SCI_EN). The FADT has SMI_CMD = 0 (no
	// ACPI enable handshake), so the PM block must read SCI_EN as 1 from reset.
	SCIEnable = 1 << 0
	// SleepTypeShift/SleepTypeMask locate SLP_TYP in PM1_CNT (bits 10-12).
	SleepTypeShift = 10
	SleepTypeMask  = 7 << SleepTypeShift
	// SleepEnable is PM1_CNT bit 13 (SLP_EN): writing it with SLP_TYP = S5SleepType powers off.
	SleepEnable = 1 << 13
	// S5SleepType is the SLP_TYP value of \_S5 (Package{5, 5, 0, 0}).
	S5SleepType = 5
)

// SCIIRQ is the ISA IRQ (and GSI, level / active high via a MADT override) of the SCI.
const SCIIRQ = 9

// GPE0 block: ports GPE0Base..GPE0Base+3, byte access only. Bytes 0-1 are
// status (write 1 to clear), bytes 2-3 enable.
const (
	GPE0Base = 0xafe0
	GPE0Len  = 4
	// GPEBits is the number of GPE0 bits (status register width).
	GPEBits = GPE0Len / 2 * 8
)

// GPE0 bit assignments; \_GPE._Exx in the DSDT handles bit xx.
const (
	GPEPCIHotplug  = 1 // \_GPE._E01 scans the hotplug up/down registers
	GPEPowerButton = 2 // \_GPE._E02 does Notify(\_SB.PWRB, 0x80)
)

// PCI hotplug controller registers (4-byte access only).
const (
	HotplugBase = 0xae00
	HotplugLen  = 0x10

	HotplugUpOffset        = 0x0 // read: slots with a pending insertion
	HotplugDownOffset      = 0x4 // read: slots with a pending removal request
	HotplugEjectOffset     = 0x8 // write: eject slots; read: feature set (0)
	HotplugRemovableOffset = 0xc // read: hot-pluggable slots (_RMV)

	// HotplugSlots is the number of slots on bus 0; slot 0 is the host
	// bridge and never hot-pluggable.
	HotplugSlots = pci.NumSlots
)
