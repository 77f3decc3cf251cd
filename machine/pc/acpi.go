package pc

import (
	"fmt"

	fwacpi "github.com/petrel-vmm/petrel/firmware/acpi"
)

// buildACPI writes the ACPI tables (RSDP, XSDT, FADT, FACS, DSDT, MADT) into
// the reserved BIOS area at fwacpi.PCTablesBase and returns the RSDP address,
// which the boot protocols hand to the guest (and which a BIOS-area scan
// finds too). The DSDT's hot-pluggable slots are the controller's.
func (m *Machine) buildACPI() (uint64, error) {
	tables, err := fwacpi.BuildPC(fwacpi.PCConfig{CPUs: m.cfg.CPUs, HotplugSlots: hotplugSlots})
	if err != nil {
		return 0, fmt.Errorf("building acpi tables: %w", err)
	}
	blob, rsdp, err := tables.Place(fwacpi.PCTablesBase, fwacpi.PCTablesLimit)
	if err != nil {
		return 0, fmt.Errorf("placing acpi tables: %w", err)
	}
	if err := m.mem.Write(fwacpi.PCTablesBase, blob); err != nil {
		return 0, fmt.Errorf("writing acpi tables at %#x: %w", fwacpi.PCTablesBase, err)
	}
	return rsdp, nil
}
