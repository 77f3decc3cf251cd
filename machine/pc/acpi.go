//go:build amd64

package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/devices/i8042"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/rtc"
	"github.com/petrel-vmm/petrel/devices/serial"
	fwacpi "github.com/petrel-vmm/petrel/firmware/acpi"
	"github.com/petrel-vmm/petrel/firmware/aml"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// writeACPI writes the ACPI tables (RSDP, XSDT, FACS, FADT, DSDT, MADT)
// that cfg describes into the reserved BIOS area at 0xe0000 and returns
// the RSDP's address, which the boot protocol hands the guest (without
// it, an OS scans 0xe0000-0xfffff for the RSDP: ACPI 6.5 section 5.2.5.1).
func writeACPI(mem *guestmem.Memory, cfg fwacpi.PCConfig, logf func(string, ...any)) (uint64, error) {
	t, err := fwacpi.BuildPC(cfg)
	if err != nil {
		return 0, err
	}
	blob, rsdp, err := t.Place(fwacpi.PCTablesBase, fwacpi.PCTablesLimit)
	if err != nil {
		return 0, err
	}
	if err := mem.Write(fwacpi.PCTablesBase, blob); err != nil {
		return 0, fmt.Errorf("writing acpi tables: %w", err)
	}
	logf("acpi tables: %d bytes at %#x", len(blob), fwacpi.PCTablesBase)
	return rsdp, nil
}

// tablesConfig is what the ACPI tables say about the machine: the memory
// map's interrupt controllers (MADT), the PM, GPE and reset registers of
// the devices that decode them (FADT), and a DSDT collected from the
// devices' own descriptions. The order of the objects is the order of the
// DSDT's bytes (TestACPITablesGolden compares them with testdata/acpi).
func tablesConfig(cpus int, bus *pci.Bus, hp *acpi.Hotplug) fwacpi.PCConfig {
	sb := []aml.Term{
		bus.AML(hp), // \_SB.PCI0, its slots and the hotplug registers
		acpi.PowerButtonAML(),
		serial.COMAML("COM1", 1, serial.COM1Port, serial.COM1IRQ),
		rtc.AML(),
		i8042.AML(),
	}
	sb = append(sb, fwacpi.ProcessorsAML(cpus)...)
	return fwacpi.PCConfig{
		CPUs:        cpus,
		LocalAPIC:   lapicBase,
		IOAPIC:      ioapicBase,
		IOAPICID:    ioapicID,
		SCI:         SCIIRQ,
		PM1aEvent:   fwacpi.IOBlock{Port: acpi.PM1aEventBase, Len: acpi.PM1aEventLen},
		PM1aControl: fwacpi.IOBlock{Port: acpi.PM1aControlBase, Len: acpi.PM1aControlLen},
		PMTimer:     fwacpi.IOBlock{Port: acpi.PMTimerBase, Len: acpi.PMTimerLen},
		GPE0:        fwacpi.IOBlock{Port: acpi.GPE0Base, Len: acpi.GPE0Len},
		ResetPort:   i8042.CommandPort,
		ResetValue:  i8042.ResetCommand,
		DSDT: []aml.Term{
			aml.Scope{Path: `\_SB`, Body: sb},
			// One handler per GPE0 bit in use (devices/acpi GPE* bits).
			aml.Scope{Path: `\_GPE`, Body: []aml.Term{hp.GPEAML(), acpi.PowerButtonGPEAML()}},
			acpi.SleepStatesAML(),
		},
	}
}
