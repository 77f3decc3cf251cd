// Package acpi builds Petrel's ACPI firmware: an AML builder and the tables
// of the x86 PC machine (ACPI 6.x).
//
// # AML builder
//
// Each ASL construct is a Go type implementing Term, whose AppendAML appends
// its AML encoding to an Encoder (Scope, Device, Method, Name, If/Else,
// While, Store, And, Or, ShiftLeft, LEqual, Notify, Return, Package, Buffer,
// Integer, String, EisaID, OperationRegion, Field, ResourceTemplate with IO,
// IRQNoFlags, Interrupt, WordBusNumber, WordIO, DWordMemory, QWordMemory,
// Local0-7, Arg0-6, Path references and Call). Encode(terms...) returns the
// bytes or the first error (invalid name, out-of-range operand). The output
// is byte-identical to what iasl -on compiles from the equivalent ASL; the
// golden tests check this for every construct.
//
// # Tables for machine/pc
//
//	tables, err := acpi.BuildPC(acpi.PCConfig{CPUs: 2, HotplugSlots: 0xfffffffe, Windows: pciWindows})
//	blob, rsdp, err := tables.Place(acpi.PCTablesBase, acpi.PCTablesLimit)
//	// write blob to guest RAM at PCTablesBase; give rsdp to the guest
//	// (PVH start_info.rsdp_paddr or boot_params.acpi_rsdp_addr; it is also
//	// found by the BIOS-area scan since it is 16-byte aligned in 0xE0000-0xFFFFF).
//
// Place lays out RSDP (revision 2), XSDT, FACS, FADT, DSDT and MADT in one
// blob starting at base, fixing every pointer and checksum (a few KiB: 8
// KiB for 255 CPUs). machine/pc.buildACPI does exactly this.
//
// Contract with machine/pc: SCI_EN in PM1a_CNT reads 1 from reset (SMI_CMD
// is 0), the PM timer is 24-bit, reset is 0xFE written to the i8042 port
// 0x64 (FADT RESET_REG), there is no PM2 block and no fixed power or sleep
// button (the power button is GPE0 bit 2 and \_SB.PWRB).
//
// Port numbers, GPE bits and the SCI come from devices/acpi, the package of
// the devices the AML drives, so that the two cannot disagree.
package acpi
