package pc

import (
	"fmt"

	fwacpi "github.com/petrel-vmm/petrel/firmware/acpi"
)

// buildACPI writes the ACPI tables (RSDP, XSDT, FACS, FADT, DSDT, MADT)
// into the reserved BIOS area at 0xe0000 and returns the RSDP address, or
// 0 with Config.NoACPI (the guest then uses its legacy defaults).
func (m *Machine) buildACPI() (uint64, error) {
	if m.cfg.NoACPI {
		return 0, nil
	}
	t, err := fwacpi.BuildPC(fwacpi.PCConfig{CPUs: m.cfg.CPUs, HotplugSlots: hotplugSlots})
	if err != nil {
		return 0, err
	}
	blob, rsdp, err := t.Place(fwacpi.PCTablesBase, fwacpi.PCTablesLimit)
	if err != nil {
		return 0, err
	}
	if err := m.mem.Write(fwacpi.PCTablesBase, blob); err != nil {
		return 0, fmt.Errorf("writing acpi tables: %w", err)
	}
	m.logf("acpi tables: %d bytes at %#x", len(blob), fwacpi.PCTablesBase)
	return rsdp, nil
}
