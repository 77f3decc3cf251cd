package pc

// buildACPI writes the ACPI tables into the reserved BIOS area and returns
// the RSDP address, or 0 when the machine boots without ACPI (the guest
// then finds no RSDP and uses its legacy defaults).
//
// Hook: firmware/acpi's table builder plugs in here once it lands.
func (m *Machine) buildACPI() (uint64, error) {
	return 0, nil
}
