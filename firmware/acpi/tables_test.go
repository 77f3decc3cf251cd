package acpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/firmware/aml"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// pcConfig is a PC like machine/pc's, its values spelled out here (this
// package defines none of them), with a one-object DSDT.
func pcConfig(cpus int) PCConfig {
	return PCConfig{
		CPUs: cpus, LocalAPIC: 0xfee00000, IOAPIC: 0xfec00000, SCI: 9,
		PM1aEvent: IOBlock{0x600, 4}, PM1aControl: IOBlock{0x604, 2}, PMTimer: IOBlock{0x608, 4},
		GPE0: IOBlock{0xafe0, 4}, ResetPort: 0x64, ResetValue: 0xfe,
		DSDT: []aml.Term{aml.Name{Path: `\_S5`, Value: aml.Package{aml.Integer(5), aml.Integer(5), aml.Zero, aml.Zero}}},
	}
}

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
	blob, l, tables := placed(t, pcConfig(4))
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
	tables, err := BuildPC(pcConfig(1))
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
	for name, bad := range map[string]func(*PCConfig){
		"0 CPUs": func(c *PCConfig) { c.CPUs = 0 }, "-1 CPUs": func(c *PCConfig) { c.CPUs = -1 },
		"too many CPUs":     func(c *PCConfig) { c.CPUs = MaxCPUs + 1 },
		"short PM1a event":  func(c *PCConfig) { c.PM1aEvent.Len = 2 },
		"short PM1a ctl":    func(c *PCConfig) { c.PM1aControl.Len = 1 },
		"PM timer length":   func(c *PCConfig) { c.PMTimer.Len = 3 },
		"odd GPE0 length":   func(c *PCConfig) { c.GPE0.Len = 3 },
		"no IOAPIC address": func(c *PCConfig) { c.IOAPIC = 0 },
		"bad DSDT name":     func(c *PCConfig) { c.DSDT = []aml.Term{aml.Name{Path: "bad", Value: aml.Zero}} },
	} {
		cfg := pcConfig(1)
		bad(&cfg)
		if _, err := BuildPC(cfg); err == nil {
			t.Errorf("BuildPC with %s accepted", name)
		}
	}
	// The largest machine still fits the BIOS area.
	big, err := BuildPC(pcConfig(MaxCPUs))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := big.Place(PCTablesBase, PCTablesLimit); err != nil {
		t.Fatalf("%d CPUs: %v", MaxCPUs, err)
	}
}

func TestMADTEntries(t *testing.T) {
	_, _, tables := placed(t, pcConfig(3))
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
	if le.Uint32(io[4:]) != 0xfec00000 || le.Uint32(io[8:]) != 0 {
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

func TestTablesDisassemble(t *testing.T) {
	blob, l, _ := placed(t, pcConfig(2))
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
			_, dsl := testutil.Disassemble(t, c.name, c.data)
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

// The processor devices' UIDs are the MADT's processor UIDs.
func TestProcessorsAML(t *testing.T) {
	got, err := aml.Encode(ProcessorsAML(2)...)
	if err != nil {
		t.Fatal(err)
	}
	want, err := aml.Encode(
		aml.Device{Path: "C000", Body: []aml.Term{aml.Name{Path: "_HID", Value: aml.String("ACPI0007")}, aml.Name{Path: "_UID", Value: aml.Zero}}},
		aml.Device{Path: "C001", Body: []aml.Term{aml.Name{Path: "_HID", Value: aml.String("ACPI0007")}, aml.Name{Path: "_UID", Value: aml.One}}},
	)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ProcessorsAML(2) = % x, want % x (%v)", got, want, err)
	}
	_, _, tables := placed(t, pcConfig(2))
	m := tables.MADT
	for i := 0; i < 2; i++ {
		lapic := m[44+8*i:]
		if lapic[0] != 0 || lapic[2] != byte(i) || lapic[3] != byte(i) {
			t.Errorf("MADT Local APIC %d = % x, want UID and APIC ID %d", i, lapic[:8], i)
		}
	}
}
