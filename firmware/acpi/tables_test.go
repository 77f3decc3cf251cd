package acpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

func placed(t *testing.T, cfg PCConfig) ([]byte, Layout, *Tables) {
	t.Helper()
	tables, err := BuildPC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	blob, l, err := tables.PlaceLayout(PCTablesBase, PCTablesLimit)
	if err != nil {
		t.Fatal(err)
	}
	return blob, l, tables
}

// table returns the table at addr in blob, by its header length.
func table(t *testing.T, blob []byte, addr uint64) []byte {
	t.Helper()
	off := addr - PCTablesBase
	n := uint64(binary.LittleEndian.Uint32(blob[off+4:]))
	if off+n > uint64(len(blob)) {
		t.Fatalf("table at %#x of length %d runs past the blob", addr, n)
	}
	return blob[off : off+n]
}

func TestPlaceChecksumsAndPointers(t *testing.T) {
	blob, l, tables := placed(t, PCConfig{CPUs: 4, HotplugSlots: 0xfffffffe})
	le := binary.LittleEndian
	if l.RSDP != PCTablesBase || l.RSDP%16 != 0 || l.FACS%64 != 0 {
		t.Fatalf("bad layout %+v", l)
	}
	if uint64(len(blob))+PCTablesBase > PCTablesLimit {
		t.Fatalf("blob of %d bytes passes the limit", len(blob))
	}
	r := blob[:36]
	if string(r[:8]) != "RSD PTR " || r[15] != 2 || le.Uint32(r[20:]) != 36 || le.Uint64(r[24:]) != l.XSDT {
		t.Fatalf("bad RSDP % x", r)
	}
	if checksum(r[:20]) != 0 || checksum(r) != 0 {
		t.Fatal("RSDP checksums do not sum to zero")
	}
	x := table(t, blob, l.XSDT)
	if string(x[:4]) != "XSDT" || len(x) != 36+16 || le.Uint64(x[36:]) != l.FADT || le.Uint64(x[44:]) != l.MADT {
		t.Fatalf("bad XSDT % x", x)
	}
	f := table(t, blob, l.FADT)
	if string(f[:4]) != "FACP" || len(f) != 276 || f[8] != 6 {
		t.Fatalf("bad FADT header % x", f[:36])
	}
	if le.Uint32(f[36:]) != uint32(l.FACS) || le.Uint32(f[40:]) != uint32(l.DSDT) || le.Uint64(f[140:]) != l.DSDT {
		t.Fatal("FADT does not point at the FACS and DSDT")
	}
	facs := blob[l.FACS-PCTablesBase:][:64]
	if string(facs[:4]) != "FACS" || le.Uint32(facs[4:]) != 64 {
		t.Fatal("bad FACS")
	}
	if d := table(t, blob, l.DSDT); !bytes.Equal(d, tables.DSDT) {
		t.Fatal("DSDT not copied intact")
	}
	if m := table(t, blob, l.MADT); !bytes.Equal(m, tables.MADT) {
		t.Fatal("MADT not copied intact")
	}
	for _, a := range []uint64{l.XSDT, l.FADT, l.DSDT, l.MADT} {
		if tb := table(t, blob, a); checksum(tb) != 0 {
			t.Errorf("%s checksum does not sum to zero", tb[:4])
		}
	}
}

func TestPlaceErrors(t *testing.T) {
	tables, err := BuildPC(PCConfig{CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tables.Place(PCTablesBase+8, PCTablesLimit); err == nil {
		t.Error("unaligned base accepted")
	}
	if _, _, err := tables.Place(PCTablesLimit-0x100, PCTablesLimit); !errors.Is(err, ErrTablesTooBig) {
		t.Errorf("tables overflowing the limit: %v", err)
	}
	if _, _, err := tables.Place(1<<32-0x100, 0); !errors.Is(err, ErrTablesTooBig) {
		t.Errorf("tables crossing 4 GiB: %v", err)
	}
	if _, _, err := tables.Place(PCTablesLimit, PCTablesBase); !errors.Is(err, ErrTablesTooBig) {
		t.Errorf("base above limit: %v", err)
	}
	for _, cfg := range []PCConfig{{CPUs: 0}, {CPUs: -1}, {CPUs: MaxCPUs + 1}, {CPUs: 1, HotplugSlots: 1}} {
		if _, err := BuildPC(cfg); err == nil {
			t.Errorf("BuildPC(%+v) accepted", cfg)
		}
	}
	// The largest machine still fits the BIOS area.
	big, err := BuildPC(PCConfig{CPUs: MaxCPUs, HotplugSlots: 0xfffffffe})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := big.Place(PCTablesBase, PCTablesLimit); err != nil {
		t.Fatalf("%d CPUs: %v", MaxCPUs, err)
	}
}

func TestMADTEntries(t *testing.T) {
	_, _, tables := placed(t, PCConfig{CPUs: 3})
	m := tables.MADT
	type entry struct{ typ, n int }
	var got []entry
	for off := 44; off < len(m); off += int(m[off+1]) {
		if m[off+1] < 2 {
			t.Fatalf("zero-length MADT entry at %d", off)
		}
		got = append(got, entry{int(m[off]), off})
	}
	types := ""
	for _, e := range got {
		types += string(rune('0' + e.typ))
	}
	// 3 Local APICs, IOAPIC, 2 overrides, Local APIC NMI.
	if types != "0001224" {
		t.Fatalf("MADT entry types %q", types)
	}
	le := binary.LittleEndian
	io := m[got[3].n:]
	if le.Uint32(io[4:]) != IOAPICAddr || le.Uint32(io[8:]) != 0 {
		t.Fatal("bad IOAPIC entry")
	}
	sci := m[got[5].n:]
	if sci[3] != 9 || le.Uint32(sci[4:]) != 9 || le.Uint16(sci[8:]) != 0xd {
		t.Fatalf("bad SCI override % x", sci[:10])
	}
	pit := m[got[4].n:]
	if pit[3] != 0 || le.Uint32(pit[4:]) != 2 {
		t.Fatalf("bad IRQ0 override % x", pit[:10])
	}
}

// disassemble runs iasl -d on data and returns the .dsl text, failing on
// any error or warning.
func disassemble(t *testing.T, name string, data []byte) (dir, dsl string) {
	t.Helper()
	iasl := testutil.NeedTool(t, "iasl")
	dir = t.TempDir()
	p := filepath.Join(dir, name+".dat")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(iasl, "-d", p).CombinedOutput()
	if err != nil || bytes.Contains(bytes.ToLower(out), []byte("error")) || bytes.Contains(bytes.ToLower(out), []byte("warning")) {
		t.Fatalf("iasl -d %s: %v\n%s", name, err, out)
	}
	text, err := os.ReadFile(filepath.Join(dir, name+".dsl"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, string(text)
}

func TestTablesDisassemble(t *testing.T) {
	blob, l, _ := placed(t, PCConfig{CPUs: 2, HotplugSlots: 0xfffffffe})
	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"facp", table(t, blob, l.FADT), []string{
			"PM1A Event Block Address : 00000600", "PM1A Control Block Address : 00000604",
			"PM Timer Block Address : 00000608", "GPE0 Block Address : 0000AFE0",
			"PM1 Event Block Length : 04", "PM1 Control Block Length : 02", "GPE0 Block Length : 04",
			"SCI Interrupt : 0009", "Control Method Power Button (V1) : 1",
			"Reset Register Supported (V2) : 1", "Hardware Reduced (V5) : 0",
			"8042 Present on ports 60/64 (V2) : 1", "Value to cause reset : FE",
		}},
		{"apic", table(t, blob, l.MADT), []string{"Local Apic ID : 01", "Address : FEC00000", "Interrupt Input LINT : 01"}},
		{"xsdt", table(t, blob, l.XSDT), []string{"ACPI Table Address   0"}},
		{"facs", blob[l.FACS-PCTablesBase:][:64], []string{"Version : 02"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, dsl := disassemble(t, c.name, c.data)
			flat := strings.Join(strings.Fields(dsl), " ")
			for _, w := range c.want {
				if !strings.Contains(flat, strings.Join(strings.Fields(w), " ")) {
					t.Errorf("disassembly lacks %q", w)
				}
			}
			if strings.Contains(dsl, "Invalid") || strings.Contains(dsl, "Incorrect checksum") {
				t.Errorf("iasl flags the table:\n%s", dsl)
			}
		})
	}
}

// The DSDT disassembles, contains what ARCHITECTURE.md promises, and the
// disassembly compiles back to the same bytes.
func TestDSDTRoundTrip(t *testing.T) {
	_, _, tables := placed(t, PCConfig{CPUs: 2, HotplugSlots: 0xfffffffe})
	dir, dsl := disassemble(t, "dsdt", tables.DSDT)
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
	if !bytes.Equal(re[headerLen:], tables.DSDT[headerLen:]) {
		t.Fatalf("recompiled DSDT body differs (%d vs %d bytes)", len(re), len(tables.DSDT))
	}
}

// stripComments removes iasl's // and /* */ annotations.
func stripComments(s string) string {
	s = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(s, "")
	return regexp.MustCompile(`//[^\n]*`).ReplaceAllString(s, "")
}

// The host bridge's _CRS follows the BAR windows machine/pc configures.
func TestCustomWindows(t *testing.T) {
	w := pci.Windows{IO: pci.Window{Base: 0x1000, Size: 0x1000}, Mem32: pci.Window{Base: 0x8000_0000, Size: 0x1000_0000}}
	tables, err := BuildPC(PCConfig{CPUs: 1, Windows: w})
	if err != nil {
		t.Fatal(err)
	}
	var e Encoder
	WordIO{AddressFlags: AddressFlags{MinFixed: true, MaxFixed: true}, ISARanges: EntireRange, Min: 0x1000, Max: 0x1fff, Length: 0x1000}.appendResource(&e)
	DWordMemory{AddressFlags: AddressFlags{MinFixed: true, MaxFixed: true}, MemoryFlags: MemoryFlags{NonCacheable, true},
		Min: 0x8000_0000, Max: 0x8fff_ffff, Length: 0x1000_0000}.appendResource(&e)
	e.Emit(0x79, 0) // no QWordMemory: the end tag follows
	if !bytes.Contains(tables.DSDT, e.buf) {
		t.Fatal("DSDT _CRS does not carry the configured windows")
	}
	def, err := BuildPC(PCConfig{CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	withDefault, err := BuildPC(PCConfig{CPUs: 1, Windows: pci.DefaultWindows})
	if err != nil || !bytes.Equal(def.DSDT, withDefault.DSDT) {
		t.Fatalf("zero Windows is not pci.DefaultWindows (%v)", err)
	}
	for _, bad := range []pci.Windows{
		{IO: pci.Window{Base: 0x100, Size: 0x100}, Mem32: w.Mem32},
		{IO: pci.Window{Base: 0xc000, Size: 0x8000}, Mem32: w.Mem32},
		{IO: w.IO, Mem32: pci.Window{Base: 0xf000_0000, Size: 0x2000_0000}},
		{IO: w.IO, Mem32: w.Mem32, Mem64: pci.Window{Base: 0x1000, Size: 0x1000}},
		{IO: w.IO},
	} {
		if _, err := BuildPC(PCConfig{CPUs: 1, Windows: bad}); err == nil {
			t.Errorf("windows %+v accepted", bad)
		}
	}
}
