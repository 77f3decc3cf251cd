package vmm

import (
	"errors"
	"testing"
)

// recDev records the last access.
type recDev struct {
	base, off uint64
	data      []byte
	reads     int
	writes    int
}

func (d *recDev) Read(base, off uint64, data []byte) {
	d.base, d.off = base, off
	for i := range data {
		data[i] = byte(off) + byte(i)
	}
	d.reads++
}

func (d *recDev) Write(base, off uint64, data []byte) {
	d.base, d.off = base, off
	d.data = append(d.data[:0], data...)
	d.writes++
}

func TestBusInsertOverlap(t *testing.T) {
	var b Bus
	a := &recDev{}
	if err := b.Insert(0x100, 0x10, a); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ base, size uint64 }{
		{0x100, 1}, {0xff, 2}, {0x10f, 1}, {0x0, 0x200}, {0x108, 0x100},
	} {
		if err := b.Insert(r.base, r.size, &recDev{}); !errors.Is(err, ErrOverlap) {
			t.Errorf("Insert(%#x, %#x) = %v, want ErrOverlap", r.base, r.size, err)
		}
	}
	// Adjacent ranges on both sides are fine.
	if err := b.Insert(0xf0, 0x10, &recDev{}); err != nil {
		t.Errorf("adjacent below: %v", err)
	}
	if err := b.Insert(0x110, 0x10, &recDev{}); err != nil {
		t.Errorf("adjacent above: %v", err)
	}
	if err := b.Insert(0x1000, 0, &recDev{}); err == nil {
		t.Error("zero-size insert accepted")
	}
	if err := b.Insert(^uint64(0)-1, 4, &recDev{}); err == nil {
		t.Error("wrapping insert accepted")
	}
}

func TestBusBoundaries(t *testing.T) {
	var b Bus
	d := &recDev{}
	if err := b.Insert(0x3f8, 8, d); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	// Last byte of the range.
	if !b.Read(0x3ff, buf[:1]) || d.off != 7 || d.base != 0x3f8 || buf[0] != 7 {
		t.Fatalf("read at last byte: off %d base %#x data %x", d.off, d.base, buf[0])
	}
	// An access straddling the end is not the device's.
	if b.Read(0x3fe, buf[:4]) {
		t.Fatal("straddling read dispatched")
	}
	for _, x := range buf {
		if x != 0xff {
			t.Fatalf("unhandled read filled %x, want ff", buf)
		}
	}
	if b.Write(0x3f6, []byte{1, 2, 3, 4}) {
		t.Fatal("write straddling the start dispatched")
	}
	if b.Write(0x400, []byte{1}) {
		t.Fatal("write past the end dispatched")
	}
	if got := b.Unhandled.Load(); got != 3 {
		t.Fatalf("Unhandled = %d, want 3", got)
	}
	if !b.Write(0x3f8, []byte{0xaa, 0xbb}) || d.off != 0 || string(d.data) != "\xaa\xbb" {
		t.Fatalf("write at start: off %d data %x", d.off, d.data)
	}
}

func TestBusRemove(t *testing.T) {
	var b Bus
	d1, d2 := &recDev{}, &recDev{}
	b.Insert(0x10, 0x10, d1)
	b.Insert(0x40, 0x10, d2)
	if _, err := b.Remove(0x11); !errors.Is(err, ErrNoRange) {
		t.Fatalf("Remove inside a range: %v, want ErrNoRange", err)
	}
	got, err := b.Remove(0x10)
	if err != nil || got != d1 {
		t.Fatalf("Remove = %v, %v", got, err)
	}
	if b.Write(0x10, []byte{1}) {
		t.Fatal("removed device still reachable")
	}
	if !b.Write(0x40, []byte{1}) || d2.writes != 1 {
		t.Fatal("other device lost")
	}
	// The freed range can be reused.
	if err := b.Insert(0x10, 0x30, d1); err != nil {
		t.Fatalf("reinsert: %v", err)
	}
	var empty Bus
	if _, err := empty.Remove(0); !errors.Is(err, ErrNoRange) {
		t.Fatalf("Remove on empty bus: %v", err)
	}
}

// TestBusConcurrentInsert checks lock-free lookups while writers change the
// table (run with -race).
func TestBusConcurrentInsert(t *testing.T) {
	var b Bus
	d := &recDev{}
	b.Insert(0, 1, d)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); i < 200; i++ {
			b.Insert(i*16, 8, &recDev{})
			b.Remove(i * 16)
		}
	}()
	buf := []byte{0}
	for i := 0; i < 2000; i++ {
		b.Read(0, buf)
	}
	<-done
}

func TestBusOnUnhandled(t *testing.T) {
	var b Bus
	var got []uint64
	b.OnUnhandled = func(addr uint64, size int, write bool) {
		if write {
			addr |= 1 << 63
		}
		got = append(got, addr, uint64(size))
	}
	b.Insert(0x10, 1, &recDev{})
	b.Read(0x20, make([]byte, 2))
	b.Write(0x30, []byte{1})
	b.Write(0x10, []byte{1}) // claimed: not reported
	if len(got) != 4 || got[0] != 0x20 || got[1] != 2 || got[2] != 1<<63|0x30 || got[3] != 1 {
		t.Fatalf("reported %x", got)
	}
}
