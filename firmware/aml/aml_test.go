package aml

import (
	"bytes"
	"strings"
	"testing"
)

func TestPkgLengthEncoding(t *testing.T) {
	for _, c := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{63, []byte{0x3f}},
		{64, []byte{0x40, 0x04}},
		{0xfff, []byte{0x4f, 0xff}},
		{0x1000, []byte{0x80, 0x00, 0x01}},
		{0xfffff, []byte{0x8f, 0xff, 0xff}},
		{0x100000, []byte{0xc0, 0x00, 0x00, 0x01}},
		{0xfffffff, []byte{0xcf, 0xff, 0xff, 0xff}},
	} {
		got := appendPkgLength(nil, c.n, pkgLengthSize(c.n))
		if !bytes.Equal(got, c.want) {
			t.Errorf("PkgLength(%#x) = % x, want % x", c.n, got, c.want)
		}
	}
}

// A package's PkgLength counts its own bytes: with 62 content bytes the
// total of 63 fits the 1-byte form, with 63 it takes the 2-byte form (65).
func TestPkgIncludesItself(t *testing.T) {
	for _, c := range []struct {
		content int
		want    []byte
	}{
		{62, []byte{0x3f}},
		{63, []byte{0x41, 0x04}},
		{0xffd, []byte{0x4f, 0xff}},
		{0xffe, []byte{0x81, 0x00, 0x01}},
		{0xffffc, []byte{0x8f, 0xff, 0xff}},
		{0xffffd, []byte{0xc1, 0x00, 0x00, 0x01}},
	} {
		var e Encoder
		e.Pkg([]byte{0x10}, func(e *Encoder) { e.Emit(make([]byte, c.content)...) })
		b, err := e.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[1:1+len(c.want)], c.want) || len(b) != 1+len(c.want)+c.content {
			t.Errorf("content %#x: PkgLength % x (total %d), want % x", c.content, b[1:1+len(c.want)], len(b), c.want)
		}
	}
}

func TestNameStrings(t *testing.T) {
	for _, c := range []struct {
		path string
		want string
	}{
		{"A", "A___"},
		{"_SB", "_SB_"},
		{`\`, "\\\x00"},
		{`\_SB`, `\_SB_`},
		{`\_SB.PCI0`, "\\\x2e_SB_PCI0"},
		{`\_SB.PCI0.S01`, "\\\x2f\x03_SB_PCI0S01_"},
		{"^^X.Y", "^^\x2eX___Y___"},
		{"^A", "^A___"},
	} {
		var e Encoder
		e.Name(c.path)
		b, err := e.Bytes()
		if err != nil || string(b) != c.want {
			t.Errorf("name %q = %q, %v; want %q", c.path, b, err, c.want)
		}
	}
	for _, bad := range []string{"", "^", "^^", "ABCDE", "a", "1AB", "A..B", `\_SB.`, `\^A`, "A-B", `\\A`, "A.\u00e9", strings.Repeat("A.", 255) + "A"} {
		var e Encoder
		e.Name(bad)
		if _, err := e.Bytes(); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	for name, term := range map[string]Term{
		"nil operand":        Store{Source: One},
		"bad method args":    Method{Path: "M", Args: 8},
		"bad sync level":     Method{Path: "M", SyncLevel: 16},
		"bad local":          Store{One, LocalObj(8)},
		"bad arg":            Return{ArgObj(7)},
		"non-ascii string":   Name{"S", String("caf\u00e9")},
		"nul in string":      Name{"S", String("a\x00b")},
		"bad eisa id":        Name{"_HID", EisaID("pnp0a03")},
		"short eisa id":      Name{"_HID", EisaID("PNP0A0")},
		"bad eisa digit":     Name{"_HID", EisaID("PNP0G03")},
		"too many call args": Call{"M", []Term{One, One, One, One, One, One, One, One}},
		"bad field name":     Field{Region: "R", Units: []FieldUnit{{"TOOLONG", 8}}},
		"zero-bit field":     Field{Region: "R", Units: []FieldUnit{{"A", 0}}},
		"bad access":         Field{Region: "R", Access: 6},
		"bad irq":            Name{"_CRS", ResourceTemplate{IRQNoFlags{16}}},
		"empty interrupt":    Name{"_CRS", ResourceTemplate{Interrupt{}}},
		"nil resource":       Name{"_CRS", ResourceTemplate{nil}},
		"nested bad name":    Scope{`\_SB`, []Term{Device{"PCI0", []Term{Name{"bad", One}}}}},
	} {
		if _, err := Encode(term); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestEisaID(t *testing.T) {
	// PNP0A03 is 0x030AD041 as a little-endian DWord (41 D0 0A 03 in memory).
	v, err := EisaID("PNP0A03").Value()
	if err != nil || v != 0x030ad041 {
		t.Fatalf("PNP0A03 = %#x, %v", v, err)
	}
}
