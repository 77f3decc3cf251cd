// Package acpi lays out Petrel's ACPI tables (ACPI 6.x chapter 5): RSDP,
// XSDT, FACS, FADT, MADT and the DSDT/SSDT header around AML.
//
// It knows table formats, not devices. Everything machine-specific comes
// in through PCConfig: the register blocks the FADT points at, the
// interrupt controller addresses for the MADT, and the DSDT's content, which
// machine/pc collects from the devices' own descriptions (each device
// package builds its AML with firmware/aml from the constants it decodes).
// The imports run devices -> firmware/aml and never firmware -> devices
// (internal/layering).
//
//	tables, err := acpi.BuildPC(acpi.PCConfig{CPUs: 2, ..., DSDT: terms})
//	blob, rsdp, err := tables.Place(acpi.PCTablesBase, acpi.PCTablesLimit)
//	// write blob to guest RAM at PCTablesBase; give rsdp to the guest
//	// (PVH start_info.rsdp_paddr or boot_params.acpi_rsdp_addr; it is also
//	// found by the BIOS-area scan since it is 16-byte aligned in 0xE0000-0xFFFFF).
//
// Place lays out RSDP (revision 2), XSDT, FACS, FADT, DSDT and MADT in one
// blob starting at base, fixing every pointer and checksum (a few KiB: 8
// KiB for 255 CPUs). machine/pc.writeACPI does exactly this.
//
// What the FADT promises machine/pc: SMI_CMD is 0, so SCI_EN in PM1a_CNT
// must read 1 from reset; the PM timer is 24-bit (TMR_VAL_EXT clear);
// RESET_REG is one byte in I/O space; there is no PM2 block and no fixed
// power or sleep button (the power button is a control-method device in the
// DSDT, raised through a GPE).
package acpi
