package guestmem

import (
	"errors"
	"testing"
)

func TestRegionsAndBounds(t *testing.T) {
	m := New()
	low := make([]byte, 0x1000)
	high := make([]byte, 0x2000)
	if err := m.Add(0x10000, high); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(0, low); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(0x10800, make([]byte, 16)); err == nil {
		t.Fatal("overlapping region accepted")
	}
	if err := m.Add(^uint64(0)-4, make([]byte, 16)); err == nil {
		t.Fatal("wrapping region accepted")
	}
	if m.Size() != 0x3000 || len(m.Regions()) != 2 || m.Regions()[0].GPA != 0 {
		t.Fatalf("size %#x regions %d", m.Size(), len(m.Regions()))
	}
	if err := m.PutUint64(0x10000+0x2000-8, 0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	if high[0x2000-8] != 0x88 || high[0x2000-1] != 0x11 {
		t.Fatal("PutUint64 is not little-endian into the host slice")
	}
	if v, err := m.Uint32(0x10000 + 0x2000 - 8); err != nil || v != 0x55667788 {
		t.Fatalf("Uint32 %#x %v", v, err)
	}
	for _, c := range []struct{ gpa, n uint64 }{
		{0x1000, 1},              // in the hole
		{0xfff, 2},               // straddles the end of the first region
		{0x10000 + 0x1fff, 2},    // straddles the end of the second
		{0x0ffff, 2},             // starts in the hole, ends in a region
		{^uint64(0), 1},          // top of the address space
		{0x10000, ^uint64(0)},    // length overflow
		{0x10000 + 0x2000, 0x10}, // just past the end
	} {
		if _, err := m.Slice(c.gpa, c.n); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Slice(%#x, %#x) = %v, want ErrOutOfRange", c.gpa, c.n, err)
		}
	}
	buf := []byte{1, 2, 3}
	if err := m.Write(0xffe, buf); !errors.Is(err, ErrOutOfRange) {
		t.Fatal("write across a region end accepted")
	}
	if low[0xffe] != 0 {
		t.Fatal("a refused write changed memory")
	}
	s, err := m.Slice(0x10, 4)
	if err != nil || cap(s) != 4 {
		t.Fatalf("Slice cap %d (must not reach past the range), %v", cap(s), err)
	}
}

func FuzzSlice(f *testing.F) {
	f.Add(uint64(0), uint64(1))
	f.Add(uint64(0xfff), uint64(2))
	f.Add(^uint64(0), ^uint64(0))
	m := New()
	m.Add(0, make([]byte, 0x1000))
	m.Add(0x4000, make([]byte, 0x1000))
	f.Fuzz(func(t *testing.T, gpa, n uint64) {
		s, err := m.Slice(gpa, n)
		if err != nil {
			return
		}
		if uint64(len(s)) != n {
			t.Fatalf("Slice(%#x,%#x) returned %d bytes", gpa, n, len(s))
		}
		inLow := gpa+n <= 0x1000 && gpa+n >= gpa
		inHigh := gpa >= 0x4000 && gpa+n <= 0x5000 && gpa+n >= gpa
		if !inLow && !inHigh {
			t.Fatalf("Slice(%#x,%#x) accepted outside RAM", gpa, n)
		}
	})
}
