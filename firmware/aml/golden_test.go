package aml

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// tableHeaderLen is the size of the ACPI table header iasl writes before
// the AML (ACPI 6.x section 5.2.6).
const tableHeaderLen = 36

// compileASL compiles body inside a DefinitionBlock with iasl and returns
// the AML after the 36-byte table header. -on keeps name paths as written
// (the builder never shortens them); -oc-style integer optimisation (Zero,
// One, Ones, shortest prefix) stays on because the builder does the same.
func compileASL(t *testing.T, body string) []byte {
	t.Helper()
	iasl := testutil.NeedTool(t, "iasl")
	dir := t.TempDir()
	src := filepath.Join(dir, "t.asl")
	asl := "DefinitionBlock (\"\", \"SSDT\", 2, \"PETREL\", \"TEST\", 1) {\n" + body + "\n}\n"
	if err := os.WriteFile(src, []byte(asl), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(iasl, "-on", "-of", "-p", filepath.Join(dir, "t"), src).CombinedOutput()
	if err != nil {
		if len(asl) > 4000 {
			asl = asl[:4000] + "..."
		}
		if len(out) > 4000 {
			out = append(out[:4000], "..."...)
		}
		t.Fatalf("iasl failed: %v\n%s\nsource:\n%s", err, out, asl)
	}
	aml, err := os.ReadFile(filepath.Join(dir, "t.aml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(aml) < tableHeaderLen {
		t.Fatalf("iasl output of %d bytes is shorter than a table header", len(aml))
	}
	return aml[tableHeaderLen:]
}

type goldenCase struct {
	name  string
	asl   string
	terms []Term
}

var goldenCases = []goldenCase{
	{"integers", `Name (I0, Zero) Name (I1, One) Name (I2, Ones) Name (I3, 0x2A) Name (I4, 0xFF) Name (I5, 0x100)
		Name (I6, 0xFFFF) Name (I7, 0x10000) Name (I8, 0xFFFFFFFF) Name (I9, 0x100000000) Name (IA, 0xFFFFFFFFFFFFFFFE)`,
		[]Term{Name{"I0", Integer(0)}, Name{"I1", Integer(1)}, Name{"I2", Ones}, Name{"I3", Integer(42)},
			Name{"I4", Integer(0xff)}, Name{"I5", Integer(0x100)}, Name{"I6", Integer(0xffff)}, Name{"I7", Integer(0x10000)},
			Name{"I8", Integer(0xffffffff)}, Name{"I9", Integer(0x100000000)}, Name{"IA", Integer(0xfffffffffffffffe)}}},
	{"strings and eisaid", `Name (_HID, EisaId ("PNP0A03")) Name (_CID, EisaId ("PNP0C0C")) Name (S, "Petrel VMM") Name (E, "")`,
		[]Term{Name{"_HID", EisaID("PNP0A03")}, Name{"_CID", EisaID("PNP0C0C")}, Name{"S", String("Petrel VMM")}, Name{"E", String("")}}},
	{"name paths", `Name (\ROOT, 1) Device (\_SB.PCI0) { Device (S01) {} Device (X) {} }
		Scope (\_SB) { Name (^UP, 2) Name (PCI0.X.Y, 3) Name (PCI0.Y, 8) } Name (\_SB.PCI0.S01.ABC, 4) Name (\_SB.A, 5)
		Scope (\) { Name (Q, 6) } Scope (\_SB.PCI0) { Scope (X) { Name (^^P2, 7) Name (_T_0, 9) } }
		Method (\_SB.PCI0.S01.MTH) { Return (^^^P2) } Method (\M4) { Store (\_SB.A, Local0) Return (\_SB.PCI0.S01.ABC) }`,
		[]Term{Name{`\ROOT`, One}, Device{`\_SB.PCI0`, []Term{Device{"S01", nil}, Device{"X", nil}}},
			Scope{`\_SB`, []Term{Name{"^UP", Integer(2)}, Name{"PCI0.X.Y", Integer(3)}, Name{"PCI0.Y", Integer(8)}}},
			Name{`\_SB.PCI0.S01.ABC`, Integer(4)}, Name{`\_SB.A`, Integer(5)},
			Scope{`\`, []Term{Name{"Q", Integer(6)}}},
			Scope{`\_SB.PCI0`, []Term{Scope{"X", []Term{Name{"^^P2", Integer(7)}, Name{"_T_0", Integer(9)}}}}},
			Method{Path: `\_SB.PCI0.S01.MTH`, Body: []Term{Return{Path("^^^P2")}}},
			Method{Path: `\M4`, Body: []Term{Store{Path(`\_SB.A`), Local0}, Return{Path(`\_SB.PCI0.S01.ABC`)}}}}},
	{"device and method", `Device (\_SB.DEV0) { Name (_ADR, 0x00010000)
		Method (_STA, 0, NotSerialized) { Return (0x0F) }
		Method (M2, 2, Serialized) { Store (Arg0, Local0) Store (Arg1, Local7) Return (Local0) }
		Method (M7, 7, Serialized, 15) { Return (Arg6) } }`,
		[]Term{Device{`\_SB.DEV0`, []Term{Name{"_ADR", Integer(0x10000)},
			Method{Path: "_STA", Body: []Term{Return{Integer(0xf)}}},
			Method{Path: "M2", Args: 2, Serialized: true, Body: []Term{Store{Arg0, Local0}, Store{Arg1, Local7}, Return{Local0}}},
			Method{Path: "M7", Args: 7, Serialized: true, SyncLevel: 15, Body: []Term{Return{Arg6}}}}}}},
	{"if else while", `Method (LOOP, 1, NotSerialized) { Store (Zero, Local0) While (LLess (Local0, Arg0)) {
		If (LEqual (Local0, 0x05)) { Break } Else { Increment (Local0) } }
		If (LAnd (LGreater (Local0, One), LNot (LOr (Zero, One)))) { Decrement (Local0) } Return (Local0) }`,
		[]Term{Method{Path: "LOOP", Args: 1, Body: []Term{Store{Zero, Local0},
			While{LLess{Local0, Arg0}, []Term{If{LEqual{Local0, Integer(5)}, []Term{Break{}}, []Term{Increment{Local0}}}}},
			If{Predicate: LAnd{LGreater{Local0, One}, LNot{LOr{Zero, One}}}, Then: []Term{Decrement{Local0}}},
			Return{Local0}}}}},
	{"arithmetic", `Method (ARIT, 2, NotSerialized) { And (Arg0, 0xFF, Local0) Or (Local0, Arg1, Local1)
		ShiftLeft (One, Arg1, Local2) ShiftRight (Arg0, 0x04, Local3) Add (Local0, Local1, Local4)
		Subtract (Local4, One, Local5) Xor (Local5, Ones, Local6) Not (Local6, Local7)
		Store (And (Arg0, ShiftLeft (One, 0x03)), Local0) Return (Or (Local0, Local7)) }`,
		[]Term{Method{Path: "ARIT", Args: 2, Body: []Term{And{Arg0, Integer(0xff), Local0}, Or{Local0, Arg1, Local1},
			ShiftLeft{One, Arg1, Local2}, ShiftRight{Arg0, Integer(4), Local3}, Add{Local0, Local1, Local4},
			Subtract{Local4, One, Local5}, Xor{Local5, Ones, Local6}, Not{Local6, Local7},
			Store{And{A: Arg0, B: ShiftLeft{A: One, B: Integer(3)}}, Local0}, Return{Or{A: Local0, B: Local7}}}}}},
	{"packages and buffers", `Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
		Name (PK, Package () { "a", Package () { One }, Buffer () { 0x01, 0x02 } })
		Name (EP, Package () {}) Name (BU, Buffer () { 0xDE, 0xAD, 0xBE, 0xEF })
		Method (IDX, 1, NotSerialized) { Return (DerefOf (Index (PK, Arg0))) }
		Method (SZ, 0, NotSerialized) { Return (SizeOf (BU)) }`,
		[]Term{Name{"_S5", Package{Integer(5), Integer(5), Zero, Zero}},
			Name{"PK", Package{String("a"), Package{One}, Buffer{1, 2}}},
			Name{"EP", Package{}}, Name{"BU", Buffer{0xde, 0xad, 0xbe, 0xef}},
			Method{Path: "IDX", Args: 1, Body: []Term{Return{DerefOf{Index{Source: Path("PK"), Index: Arg0}}}}},
			Method{Path: "SZ", Body: []Term{Return{SizeOf{Path("BU")}}}}}},
	{"region field notify call", `OperationRegion (PCST, SystemIO, 0xAE00, 0x10)
		Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32, PCRM, 32 }
		OperationRegion (MEM, SystemMemory, 0xFEC00000, 0x1000)
		Field (MEM, ByteAcc, Lock, Preserve) { , 8, F1, 1, F2, 7, Offset (0x10), F3, 16, , 4096, F4, 8 }
		Field (MEM, AnyAcc, NoLock, WriteAsOnes) { Offset (0x800), BIG, 16384 }
		Device (S01) { Name (_ADR, 0x00010000) }
		Method (TEST, 1, NotSerialized) { Notify (S01, One) Notify (\S01, 0x03) TWO (Arg0, PCIU) Store (0x02, B0EJ) }
		Method (TWO, 2, NotSerialized) { Return (Add (Arg0, Arg1)) }`,
		[]Term{OperationRegion{"PCST", SystemIO, Integer(0xae00), Integer(0x10)},
			Field{Region: "PCST", Access: DWordAcc, Update: WriteAsZeros, Units: []FieldUnit{{"PCIU", 32}, {"PCID", 32}, {"B0EJ", 32}, {"PCRM", 32}}},
			OperationRegion{"MEM", SystemMemory, Integer(0xfec00000), Integer(0x1000)},
			Field{Region: "MEM", Access: ByteAcc, Lock: true, Units: []FieldUnit{{"", 8}, {"F1", 1}, {"F2", 7}, {"", 8 * 14}, {"F3", 16}, {"", 4096}, {"F4", 8}}},
			Field{Region: "MEM", Access: AnyAcc, Update: WriteAsOnes, Units: []FieldUnit{{"", 0x800 * 8}, {"BIG", 16384}}},
			Device{"S01", []Term{Name{"_ADR", Integer(0x10000)}}},
			Method{Path: "TEST", Args: 1, Body: []Term{Notify{Path("S01"), One}, Notify{Path(`\S01`), Integer(3)},
				Call{"TWO", []Term{Arg0, Path("PCIU")}}, Store{Integer(2), Path("B0EJ")}}},
			Method{Path: "TWO", Args: 2, Body: []Term{Return{Add{A: Arg0, B: Arg1}}}}}},
	{"resource template", `Name (_CRS, ResourceTemplate () {
		WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, 0x0000, 0x00FF, 0x0000, 0x0100,,,)
		IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08, )
		IO (Decode10, 0x0060, 0x0060, 0x00, 0x01, )
		WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, 0x0000, 0x0CF7, 0x0000, 0x0CF8,,, , TypeStatic, DenseTranslation)
		DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, 0xC0000000, 0xFBFFFFFF, 0x00000000, 0x3C000000,,, , AddressRangeMemory, TypeStatic)
		QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable, ReadOnly, 0x0, 0x10000000000, 0x1FFFFFFFFFF, 0x0, 0x10000000000,,, , AddressRangeMemory, TypeStatic)
		DWordMemory (ResourceConsumer, SubDecode, MinNotFixed, MaxNotFixed, Cacheable, ReadWrite, 0x0, 0x1000, 0x1FFF, 0x0, 0x1000,,, , AddressRangeMemory, TypeStatic)
		Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, ) { 0x00000009 }
		Interrupt (ResourceProducer, Edge, ActiveLow, Shared, ,, ) { 16, 17, 0x100 }
		Interrupt (ResourceConsumer, Level, ActiveLow, ExclusiveAndWake, ,, ) { 5 }
		IRQNoFlags () { 4 }
		IRQNoFlags () { 1, 8, 15 } })`,
		[]Term{Name{"_CRS", ResourceTemplate{
			WordBusNumber{AddressFlags: AddressFlags{MinFixed: true, MaxFixed: true}, Max: 0xff, Length: 0x100},
			IO{Decode16: true, Min: 0xcf8, Max: 0xcf8, Align: 1, Length: 8},
			IO{Min: 0x60, Max: 0x60, Length: 1},
			WordIO{AddressFlags: AddressFlags{MinFixed: true, MaxFixed: true}, ISARanges: EntireRange, Max: 0xcf7, Length: 0xcf8},
			DWordMemory{AddressFlags: AddressFlags{MinFixed: true, MaxFixed: true}, MemoryFlags: MemoryFlags{NonCacheable, true}, Min: 0xc0000000, Max: 0xfbffffff, Length: 0x3c000000},
			QWordMemory{AddressFlags: AddressFlags{MinFixed: true, MaxFixed: true}, MemoryFlags: MemoryFlags{Prefetchable, false}, Min: 1 << 40, Max: 1<<41 - 1, Length: 1 << 40},
			DWordMemory{AddressFlags: AddressFlags{Consumer: true, SubDecode: true}, MemoryFlags: MemoryFlags{Cacheable, true}, Min: 0x1000, Max: 0x1fff, Length: 0x1000},
			Interrupt{Consumer: true, GSIs: []uint32{9}},
			Interrupt{Edge: true, ActiveLow: true, Shared: true, GSIs: []uint32{16, 17, 0x100}},
			Interrupt{Consumer: true, ActiveLow: true, Wake: true, GSIs: []uint32{5}},
			IRQNoFlags{4}, IRQNoFlags{1, 8, 15}}}}},
}

// bufferCase is Name(B, Buffer(){...}) with n explicit bytes: iasl only
// writes the bytes of an initializer list, so the list is spelled out.
func bufferCase(n int) goldenCase {
	data := make([]byte, n)
	var asl strings.Builder
	asl.WriteString("Name (B, Buffer () {")
	for i := range data {
		data[i] = byte(i*7 + 1)
		if i > 0 {
			asl.WriteString(",")
		}
		fmt.Fprintf(&asl, "0x%02X", data[i])
	}
	asl.WriteString("})")
	return goldenCase{fmt.Sprintf("buffer of %d", n), asl.String(), []Term{Name{"B", Buffer(data)}}}
}

// scopeCase is Scope(\_SB){Name(Sxxx, "...")...} whose content (what the
// Scope's PkgLength covers besides itself) is exactly n bytes.
func scopeCase(n int) goldenCase {
	const perName = 1 + 4 + 1 + 1 // NameOp, NameSeg, StringPrefix, NUL
	var asl strings.Builder
	var terms []Term
	left := n - 5 // the NameString \_SB_
	for i := 0; left > 0; i++ {
		l := min(4000, left-perName)
		if left-(l+perName) > 0 && left-(l+perName) < perName {
			l -= perName // leave room for one more Name
		}
		str := strings.Repeat("Petrel!", l/7+1)[:l]
		name := fmt.Sprintf("S%03X", i)
		fmt.Fprintf(&asl, "Name (%s, \"%s\")\n", name, str)
		terms = append(terms, Name{name, String(str)})
		left -= l + perName
	}
	return goldenCase{fmt.Sprintf("scope of %d bytes", n), "Scope (\\_SB) {\n" + asl.String() + "}",
		[]Term{Scope{`\_SB`, terms}}}
}

func TestGoldenAgainstIASL(t *testing.T) {
	cases := goldenCases
	// PkgLength boundaries: BufferOp's PkgLength covers itself, the
	// BufferSize integer (2 or 3 bytes here) and the data, so these sizes
	// land on both sides of the 1-, 2-, 3- and 4-byte forms.
	for _, n := range []int{0, 59, 60, 61, 62, 4088, 4089, 4090} {
		cases = append(cases, bufferCase(n))
	}
	// Packages of 255 elements use PackageOp, of 256 and more VarPackageOp.
	for _, n := range []int{255, 256, 300} {
		elems := make(Package, n)
		asl := make([]string, n)
		for i := range elems {
			elems[i] = Integer(i)
			asl[i] = fmt.Sprintf("0x%X", i)
		}
		cases = append(cases, goldenCase{fmt.Sprintf("package of %d", n),
			"Name (P, Package () {" + strings.Join(asl, ", ") + "})", []Term{Name{"P", elems}}})
	}
	// The 3- and 4-byte forms: a Scope holding long strings (iasl limits a
	// string to 4096 characters and takes minutes over a megabyte of buffer
	// bytes). The Scope's content is 5 bytes of name plus the Names.
	for _, n := range []int{1<<12 - 3, 1<<12 - 2, 1<<16 + 11, 1<<20 - 4, 1<<20 - 3, 1<<20 + 100} {
		cases = append(cases, scopeCase(n))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := compileASL(t, c.asl)
			got, err := Encode(c.terms...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("builder output differs from iasl\nbuilder:\n%s\niasl:\n%s", dump(got), dump(want))
			}
		})
	}
}

func dump(b []byte) string {
	if len(b) > 512 {
		return hex.Dump(b[:512]) + "...\n"
	}
	return strings.TrimRight(hex.Dump(b), "\n")
}
