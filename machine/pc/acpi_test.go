//go:build amd64

package pc

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dev "github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/devices/pci"
	fwacpi "github.com/petrel-vmm/petrel/firmware/acpi"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

var updateACPI = flag.Bool("update-acpi", false, "rewrite testdata/acpi/*.bin from the current tables")

// tableHeaderLen is the common ACPI table header (ACPI 6.x section 5.2.6).
const tableHeaderLen = 36

// tablesCase is a machine the ACPI tests build tables for: cpus vCPUs and
// the hot-pluggable slot mask, with the devices machine/pc would create
// (the PCI bus on pciWindows, a hotplug controller for the mask).
type tablesCase struct {
	cpus    int
	hotplug uint32
}

func (c tablesCase) config(t *testing.T) fwacpi.PCConfig {
	t.Helper()
	hp, err := dev.NewHotplug(dev.NewGPE(nil), c.hotplug, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tablesConfig(c.cpus, pci.NewBus(nil, testWindows(t)), hp)
}

func (c tablesCase) build(t *testing.T) *fwacpi.Tables {
	t.Helper()
	tables, err := fwacpi.BuildPC(c.config(t))
	if err != nil {
		t.Fatal(err)
	}
	return tables
}

// place builds and places the tables at fwacpi.PCTablesBase as writeACPI does.
func (c tablesCase) place(t *testing.T) ([]byte, fwacpi.Layout, *fwacpi.Tables) {
	t.Helper()
	tables := c.build(t)
	blob, l, err := tables.PlaceLayout(fwacpi.PCTablesBase, fwacpi.PCTablesLimit)
	if err != nil {
		t.Fatal(err)
	}
	return blob, l, tables
}

// table returns the table at addr in blob, by its header length.
func table(t *testing.T, blob []byte, addr uint64) []byte {
	t.Helper()
	off := addr - fwacpi.PCTablesBase
	n := uint64(binary.LittleEndian.Uint32(blob[off+4:]))
	if off+n > uint64(len(blob)) {
		t.Fatalf("table at %#x of length %d runs past the blob", addr, n)
	}
	return blob[off : off+n]
}

// The placed tables are byte for byte those in testdata/acpi (see its
// README): a change in any device's AML, in the order machine/pc collects
// it, or in the FADT/MADT parameters shows up here as a diff, to be
// explained and then accepted with -update-acpi.
func TestACPITablesGolden(t *testing.T) {
	for name, c := range map[string]tablesCase{
		"tables-2cpu-all-slots.bin":   {2, hotplugSlots},
		"tables-3cpu-slots-2-4.bin":   {3, 1<<2 | 1<<4},
		"tables-255cpu-all-slots.bin": {255, hotplugSlots},
	} {
		blob, l, _ := c.place(t)
		path := filepath.Join("testdata", "acpi", name)
		if *updateACPI {
			if err := os.WriteFile(path, blob, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(blob, want) {
			at := 0
			for at < len(blob) && at < len(want) && blob[at] == want[at] {
				at++
			}
			where := "past the end"
			for tb, a := range map[string]uint64{"FADT": l.FADT, "DSDT": l.DSDT, "MADT": l.MADT, "XSDT": l.XSDT} {
				if n := uint64(len(table(t, blob, a))); uint64(at) >= a-fwacpi.PCTablesBase && uint64(at) < a-fwacpi.PCTablesBase+n {
					where = fmt.Sprintf("in the %s at offset %#x", tb, uint64(at)-(a-fwacpi.PCTablesBase))
				}
			}
			t.Errorf("%s: %d bytes, want %d; first difference at %#x, %s", name, len(blob), len(want), at, where)
		}
	}
}

// The FADT and MADT carry the machine's registers and interrupt
// controllers as iasl decodes them.
func TestACPITablesDisassemble(t *testing.T) {
	blob, l, _ := allSlots().place(t)
	for name, want := range map[string][]string{
		"facp": {
			"PM1A Event Block Address : 00000600", "PM1A Control Block Address : 00000604",
			"PM Timer Block Address : 00000608", "GPE0 Block Address : 0000AFE0",
			"PM1 Event Block Length : 04", "PM1 Control Block Length : 02", "GPE0 Block Length : 04",
			"SCI Interrupt : 0009", "Control Method Power Button (V1) : 1",
			"Reset Register Supported (V2) : 1", "Address : 0000000000000064", "Value to cause reset : FE",
		},
		"apic": {"Local Apic Address : FEE00000", "Local Apic ID : 01", "Address : FEC00000", "Interrupt Input LINT : 01"},
	} {
		addr := l.FADT
		if name == "apic" {
			addr = l.MADT
		}
		_, dsl := testutil.Disassemble(t, name, table(t, blob, addr))
		flat := strings.Join(strings.Fields(dsl), " ")
		for _, w := range want {
			if !strings.Contains(flat, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("%s disassembly lacks %q", name, w)
			}
		}
	}
}

// The DSDT disassembles, contains what ARCHITECTURE.md promises, and the
// disassembly compiles back to the same bytes.
func TestDSDTRoundTrip(t *testing.T) {
	_, _, tables := allSlots().place(t)
	dir, dsl := testutil.Disassemble(t, "dsdt", tables.DSDT)
	flat := strings.Join(strings.Fields(stripComments(dsl)), " ")
	for _, w := range []string{
		`Device (PCI0)`, `Name (_HID, EisaId ("PNP0A03")`, `Name (_PRT, Package (0x20)`,
		`OperationRegion (PCST, SystemIO, 0xAE00, 0x10)`, `Field (PCST, DWordAcc, NoLock, WriteAsZeros)`,
		`Device (S01)`, `Device (S1F)`, `Name (_ADR, 0x001F0000)`, `Name (_SUN, 0x1F)`,
		`Method (_EJ0, 1, NotSerialized)`, `B0EJ = 0x80000000`, `Method (_RMV, 0, NotSerialized)`,
		`Scope (\_GPE)`, `Method (_E01, 0, NotSerialized)`, `Notify (\_SB.PCI0.S1F, One)`,
		`Notify (\_SB.PCI0.S1F, 0x03)`, `Method (_E02, 0, NotSerialized)`, `Notify (\_SB.PWRB, 0x80)`,
		`Device (PWRB)`, `EisaId ("PNP0C0C")`, `Device (COM1)`, `EisaId ("PNP0501")`,
		`IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08, )`, `IRQNoFlags () {4}`, `EisaId ("PNP0B00")`,
		`IO (Decode16, 0x0070, 0x0070, 0x00, 0x02, )`, `IRQNoFlags () {8}`, `EisaId ("PNP0303")`,
		`IO (Decode16, 0x0064, 0x0064, 0x00, 0x01, )`, `IRQNoFlags () {1}`,
		`Name (\_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })`, `Name (_HID, "ACPI0007"`, `Name (_UID, One)`,
	} {
		if !strings.Contains(flat, strings.Join(strings.Fields(w), " ")) {
			t.Errorf("DSDT disassembly lacks %q", w)
		}
	}
	iasl := testutil.NeedTool(t, "iasl")
	out, err := exec.Command(iasl, "-on", "-of", "-p", filepath.Join(dir, "re"), filepath.Join(dir, "dsdt.dsl")).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("0 Errors, 0 Warnings, 0 Remarks")) {
		t.Fatalf("recompiling the disassembly: %v\n%s", err, out)
	}
	re, err := os.ReadFile(filepath.Join(dir, "re.aml"))
	if err != nil {
		t.Fatal(err)
	}
	// The header differs in compiler ID and checksum only.
	if !bytes.Equal(re[tableHeaderLen:], tables.DSDT[tableHeaderLen:]) {
		t.Fatalf("recompiled DSDT body differs (%d vs %d bytes)", len(re), len(tables.DSDT))
	}
}

// stripComments removes iasl's // and /* */ annotations.
func stripComments(s string) string {
	s = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(s, "")
	return regexp.MustCompile(`//[^\n]*`).ReplaceAllString(s, "")
}

func BenchmarkBuildACPI(b *testing.B) {
	hp, err := dev.NewHotplug(dev.NewGPE(nil), hotplugSlots, nil)
	if err != nil {
		b.Fatal(err)
	}
	bus := pci.NewBus(nil, testWindows(b))
	for b.Loop() {
		t, err := fwacpi.BuildPC(tablesConfig(8, bus, hp))
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := t.Place(fwacpi.PCTablesBase, fwacpi.PCTablesLimit); err != nil {
			b.Fatal(err)
		}
	}
}
