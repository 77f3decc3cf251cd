package fdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// sample builds a small tree exercising every token and property helper.
func sample(t *testing.T) []byte {
	t.Helper()
	b := NewBuilder()
	b.SetBootCPU(3)
	b.Reserve(0x2000, 0x1000)
	b.Reserve(0x1000, 0x100)
	b.BeginNode("")
	b.PropertyU32("#address-cells", 2)
	b.PropertyU32("#size-cells", 2)
	b.PropertyString("model", "petrel-test")
	b.PropertyStrings("compatible", "petrel,a", "petrel,b")
	b.Nop()
	b.BeginNode("memory@0")
	b.PropertyString("device_type", "memory")
	b.PropertyU64("reg", 0, 0x4000_0000)
	b.EndNode()
	ph := b.AllocPhandle()
	b.BeginNode("intc")
	b.PropertyEmpty("interrupt-controller")
	b.PropertyU32("#interrupt-cells", 2)
	b.PropertyU32("#address-cells", 0)
	b.PropertyU32("phandle", ph)
	b.EndNode()
	b.BeginNode("chosen")
	b.PropertyString("bootargs", "console=hvc0")
	b.EndNode()
	b.EndNode()
	blob, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

func TestRoundTrip(t *testing.T) {
	blob := sample(t)
	if got := binary.BigEndian.Uint32(blob[4:]); int(got) != len(blob) {
		t.Fatalf("totalsize %d, blob %d", got, len(blob))
	}
	tr, err := Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Version != 17 || tr.LastCompVersion != 16 || tr.BootCPU != 3 {
		t.Fatalf("header %+v", tr)
	}
	want := []Reservation{{0x1000, 0x100}, {0x2000, 0x1000}}
	if len(tr.Reservations) != 2 || tr.Reservations[0] != want[0] || tr.Reservations[1] != want[1] {
		t.Fatalf("reservations %+v", tr.Reservations)
	}
	mem := tr.Lookup("/memory@0")
	if mem == nil {
		t.Fatal("no /memory@0")
	}
	reg, _ := mem.PropU32s("reg")
	if len(reg) != 4 || reg[3] != 0x4000_0000 {
		t.Fatalf("reg %#x", reg)
	}
	compat, _ := tr.Root.PropStrings("compatible")
	if strings.Join(compat, "|") != "petrel,a|petrel,b" {
		t.Fatalf("compatible %q", compat)
	}
	if v, ok := tr.Lookup("/intc").Prop("interrupt-controller"); !ok || len(v) != 0 {
		t.Fatal("empty property lost")
	}
	ph, _ := tr.Lookup("/intc").PropU32s("phandle")
	if ph[0] != 1 {
		t.Fatalf("phandle %d", ph[0])
	}
	if tr.Lookup("/nope") != nil {
		t.Fatal("lookup of a missing node succeeded")
	}
}

// TestStringDedup checks that a property name is stored once in the
// strings block however often it is used.
func TestStringDedup(t *testing.T) {
	b := NewBuilder()
	b.BeginNode("")
	for _, n := range []string{"a", "b", "c"} {
		b.BeginNode(n)
		b.PropertyString("device_type", "x")
		b.EndNode()
	}
	b.EndNode()
	blob, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	sizeStrings := binary.BigEndian.Uint32(blob[32:])
	if sizeStrings != uint32(len("device_type")+1) {
		t.Fatalf("strings block %d bytes, want %d", sizeStrings, len("device_type")+1)
	}
}

func TestBuilderErrors(t *testing.T) {
	cases := map[string]func(b *Builder){
		"named root":        func(b *Builder) { b.BeginNode("x"); b.EndNode() },
		"prop outside node": func(b *Builder) { b.PropertyString("a", "b") },
		"unbalanced":        func(b *Builder) { b.BeginNode("") },
		"extra end":         func(b *Builder) { b.BeginNode(""); b.EndNode(); b.EndNode() },
		"second root":       func(b *Builder) { b.BeginNode(""); b.EndNode(); b.BeginNode("") },
		"duplicate prop":    func(b *Builder) { b.BeginNode(""); b.PropertyU32("a", 1); b.PropertyU32("a", 2); b.EndNode() },
		"bad node char":     func(b *Builder) { b.BeginNode(""); b.BeginNode("a/b"); b.EndNode(); b.EndNode() },
		"empty node name":   func(b *Builder) { b.BeginNode(""); b.BeginNode(""); b.EndNode(); b.EndNode() },
		"bad prop char":     func(b *Builder) { b.BeginNode(""); b.PropertyEmpty("a b"); b.EndNode() },
		"long prop name":    func(b *Builder) { b.BeginNode(""); b.PropertyEmpty(strings.Repeat("a", 32)); b.EndNode() },
		"NUL in string":     func(b *Builder) { b.BeginNode(""); b.PropertyString("a", "x\x00y"); b.EndNode() },
		"zero reservation":  func(b *Builder) { b.Reserve(0x1000, 0); b.BeginNode(""); b.EndNode() },
		"no root":           func(b *Builder) {},
		"trailing at":       func(b *Builder) { b.BeginNode(""); b.BeginNode("cpu@"); b.EndNode(); b.EndNode() },
	}
	for name, build := range cases {
		b := NewBuilder()
		build(b)
		if _, err := b.Finish(); !errors.Is(err, ErrBuild) {
			t.Errorf("%s: err = %v, want ErrBuild", name, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := sample(t)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	put := func(b []byte, off int, v uint32) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
	cases := map[string][]byte{
		"short":            good[:20],
		"bad magic":        mutate(func(b []byte) []byte { return put(b, 0, 0xdeadbeef) }),
		"totalsize large":  mutate(func(b []byte) []byte { return put(b, 4, uint32(len(b)+1)) }),
		"struct outside":   mutate(func(b []byte) []byte { return put(b, 36, 0xffffff00) }),
		"strings outside":  mutate(func(b []byte) []byte { return put(b, 12, 0xfffffff0) }),
		"version 15":       mutate(func(b []byte) []byte { return put(b, 20, 15) }),
		"truncated struct": mutate(func(b []byte) []byte { return put(b, 36, 8) }),
		"empty strings":    mutate(func(b []byte) []byte { return put(b, 32, 0) }),
		"misaligned rsv":   mutate(func(b []byte) []byte { return put(b, 16, 41) }),
	}
	for name, blob := range cases {
		if _, err := Parse(blob); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
}

// TestParseDeepNesting checks the depth bound on a hand-made blob.
func TestParseDeepNesting(t *testing.T) {
	b := NewBuilder()
	b.BeginNode("")
	for i := 0; i < maxDepth+1; i++ {
		b.BeginNode("n")
	}
	for i := 0; i < maxDepth+2; i++ {
		b.EndNode()
	}
	blob, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(blob); !errors.Is(err, ErrFormat) {
		t.Fatalf("err = %v, want ErrFormat for deep nesting", err)
	}
}

// TestDtcAcceptsBlob decompiles the sample with dtc and checks its output
// names the nodes and values; any dtc warning fails the test.
func TestDtcAcceptsBlob(t *testing.T) {
	dtc := testutil.NeedTool(t, "dtc")
	path := filepath.Join(t.TempDir(), "t.dtb")
	if err := os.WriteFile(path, sample(t), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(dtc, "-I", "dtb", "-O", "dts", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dtc: %v\n%s", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Fatalf("dtc warnings:\n%s", stderr.String())
	}
	for _, want := range []string{
		"/memreserve/\t0x0000000000001000 0x0000000000000100;",
		`compatible = "petrel,a\0petrel,b";`,
		"reg = <0x00 0x00 0x00 0x40000000>;",
		"interrupt-controller;",
		`bootargs = "console=hvc0";`,
		"memory@0 {",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dtc output lacks %q:\n%s", want, out)
		}
	}
}
