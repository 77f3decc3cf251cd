package acpi

// headerLen is the size of the common ACPI table header (5.2.6).
const headerLen = 36
