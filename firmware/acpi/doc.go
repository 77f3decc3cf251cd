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
//	tables, err := acpi.BuildPC(acpi.PCConfig{CPUs: 2, HotplugSlots: 0xfffffffe})
//	blob, rsdp, err := tables.Place(acpi.PCTablesBase)
//	// write blob to guest RAM at PCTablesBase; give rsdp to the guest
//	// (PVH start_info.rsdp_paddr or boot_params.acpi_rsdp_addr; it is also
//	// found by the BIOS-area scan since it is 16-byte aligned in 0xE0000-0xFFFFF).
//
// Place lays out RSDP (revision 2), XSDT, FADT, FACS, DSDT and MADT in one
// blob starting at base, fixing every pointer and checksum.
//
// Port numbers, GPE bits and the SCI come from devices/acpi, the package of
// the devices the AML drives, so that the two cannot disagree.
package acpi
