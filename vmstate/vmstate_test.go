package vmstate

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func sample(t testing.TB) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	var e Enc
	e.U32(1)
	e.U8(7)
	e.U16(0x1234)
	e.U64(1 << 40)
	e.Bool(true)
	e.Bytes([]byte("regs"))
	e.String("com1")
	e.Fixed([]byte{1, 2, 3})
	w.Section("serial", 1, e.Data())
	ram := make([]byte, 4*PageSize)
	copy(ram[PageSize:], "page one")
	ram[3*PageSize+100] = 9
	pages, err := WriteRAM(w, []RAMRegion{{GuestAddr: 0, Mem: ram}, {GuestAddr: 1 << 32, Mem: make([]byte, PageSize)}})
	if err != nil || pages != 2 {
		t.Fatalf("WriteRAM: %d pages, %v; want 2 pages", pages, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Len() != int64(buf.Len()) {
		t.Fatalf("Len %d, wrote %d", w.Len(), buf.Len())
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	b := sample(t)
	r, err := NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	name, ver, _, err := r.Next()
	if err != nil || name != "serial" || ver != 1 {
		t.Fatalf("first section %q v%d, %v", name, ver, err)
	}
	p, err := r.Section()
	if err != nil {
		t.Fatal(err)
	}
	d := NewDec(name, p)
	d.Version(1)
	if d.U8() != 7 || d.U16() != 0x1234 || d.U64() != 1<<40 || !d.Bool() || string(d.Bytes(16)) != "regs" || d.String(16) != "com1" {
		t.Fatalf("fields read back wrong: %v", d.Err())
	}
	var f [3]byte
	d.FixedInto(f[:])
	if f != [3]byte{1, 2, 3} || d.Finish() != nil {
		t.Fatalf("fixed %v, finish %v", f, d.Finish())
	}
	name, ver, _, err = r.Next()
	if err != nil || name != RAMSection {
		t.Fatalf("second section %q, %v", name, err)
	}
	ram := bytes.Repeat([]byte{0xff}, 4*PageSize) // stale contents must be cleared
	hi := make([]byte, PageSize)
	if err := ReadRAM(r, ver, []RAMRegion{{GuestAddr: 0, Mem: ram}, {GuestAddr: 1 << 32, Mem: hi}}); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4*PageSize)
	copy(want[PageSize:], "page one")
	want[3*PageSize+100] = 9
	if !bytes.Equal(ram, want) {
		t.Fatal("RAM read back differs")
	}
	if name, _, _, err := r.Next(); name != "" || err != nil {
		t.Fatalf("end: %q %v", name, err)
	}
}

// Zero pages cost nothing: the stream of 4 MiB of zero RAM is a bitmap.
func TestZeroPagesAreFree(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if _, err := WriteRAM(w, []RAMRegion{{GuestAddr: 0, Mem: make([]byte, 4<<20)}}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if buf.Len() > 512 {
		t.Fatalf("4 MiB of zero RAM took %d bytes", buf.Len())
	}
}

// Every single-bit flip and every truncation is an error, never a panic.
func TestDamageIsDetected(t *testing.T) {
	b := sample(t)
	for i := 0; i < len(b)*8; i += 7 {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if err := Verify(bytes.NewReader(c), int64(len(c))); err == nil {
			t.Fatalf("flip of bit %d not detected", i)
		}
	}
	for n := 0; n < len(b); n += 5 {
		if err := Verify(bytes.NewReader(b[:n]), int64(len(b))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncation to %d bytes: %v", n, err)
		}
		if err := Verify(bytes.NewReader(b), int64(n)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("limit %d: %v", n, err)
		}
	}
	if err := Verify(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

func TestRAMMismatchNamesTheDifference(t *testing.T) {
	b := sample(t)
	r, _ := NewReader(bytes.NewReader(b), int64(len(b)))
	r.Next()
	r.Next()
	err := ReadRAM(r, 1, []RAMRegion{{GuestAddr: 0, Mem: make([]byte, 8*PageSize)}, {GuestAddr: 1 << 32, Mem: make([]byte, PageSize)}})
	if err == nil || !strings.Contains(err.Error(), "saved RAM region is 0 MiB at 0x0, this machine's is 0 MiB at 0x0") && !strings.Contains(err.Error(), "saved RAM region") {
		t.Fatalf("mismatch: %v", err)
	}
}

func TestDecoderLimits(t *testing.T) {
	var e Enc
	e.U32(2)
	e.U32(1 << 30) // a byte string claiming 1 GiB
	d := NewDec("dev", e.Data())
	d.Version(1)
	if d.Err() == nil || !strings.Contains(d.Err().Error(), "versions 1 to 1") {
		t.Fatalf("version 2 accepted: %v", d.Err())
	}
	d = NewDec("dev", e.Data()[4:])
	if b := d.Bytes(1 << 20); b != nil || d.Err() == nil {
		t.Fatal("oversized byte string accepted")
	}
	d = NewDec("dev", []byte{2})
	if d.Bool(); d.Err() == nil {
		t.Fatal("boolean 2 accepted")
	}
	d = NewDec("dev", []byte{1, 2})
	d.U8()
	if d.Finish() == nil {
		t.Fatal("left-over byte accepted")
	}
}

func TestWriterChecksLengths(t *testing.T) {
	w := NewWriter(io.Discard)
	sw := w.Begin("ram", 1, 10)
	sw.Write(make([]byte, 4))
	if err := w.Close(); err == nil {
		t.Fatal("short section accepted")
	}
	w = NewWriter(io.Discard)
	if _, err := w.Begin("ram", 1, 2).Write(make([]byte, 3)); err == nil {
		t.Fatal("long section accepted")
	}
}

// A page Resident marks as never touched is not read: it is stored as
// zero even if (impossibly for real RAM) it held data, and a short
// residency vector is an error.
func TestResidentSkipsPages(t *testing.T) {
	mem := make([]byte, 2*PageSize)
	mem[10], mem[PageSize+10] = 1, 2
	var buf bytes.Buffer
	w := NewWriter(&buf)
	pages, err := WriteRAM(w, []RAMRegion{{Mem: mem, Resident: []byte{0, 1}}})
	if err != nil || pages != 1 {
		t.Fatalf("%d pages stored, %v; want 1", pages, err)
	}
	if _, err := WriteRAM(NewWriter(io.Discard), []RAMRegion{{Mem: mem, Resident: []byte{1}}}); err == nil {
		t.Fatal("a residency vector of the wrong length was accepted")
	}
}

// On load, a page saved as zero that Resident marks untouched is left
// alone (it is zero already); a touched one is cleared.
func TestReadRAMResident(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if _, err := WriteRAM(w, []RAMRegion{{Mem: make([]byte, 2*PageSize)}}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	mem := bytes.Repeat([]byte{7}, 2*PageSize)
	r, _ := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	_, ver, _, _ := r.Next()
	if err := ReadRAM(r, ver, []RAMRegion{{Mem: mem, Resident: []byte{0, 1}}}); err != nil {
		t.Fatal(err)
	}
	if mem[0] != 7 || mem[PageSize] != 0 {
		t.Fatalf("page 0 (untouched) %d, page 1 (touched) %d; want 7 and 0", mem[0], mem[PageSize])
	}
}
