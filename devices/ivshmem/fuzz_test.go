package ivshmem

import (
	"encoding/binary"
	"testing"
)

// FuzzRegisters drives BAR0 with guest accesses at every offset and width:
// ops are 7-byte records (op, offset, width selector, 32-bit value). The
// device must not panic, reads outside the registers must return 0, the
// mask must read back what was written, IVPosition must stay the server's
// ID, and INTA# must always equal status & mask.
func FuzzRegisters(f *testing.F) {
	sock := startServer(f, 2)
	irq := &line{}
	d, err := NewDoorbell(sock, 2, Interrupts{IRQ: irq, Signaler: &signaler{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Release() })
	id := uint32(d.ID())
	f.Add([]byte{1, 0, 2, 1, 0, 0, 0, 1, 4, 2, 1, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0})
	f.Add([]byte{1, 12, 2, 0, 0, 1, 0, 1, 12, 2, 1, 0, 0, 0, 0, 8, 2, 0, 0, 0, 0})
	f.Add([]byte{1, 3, 0, 0xff, 0, 0, 0, 0, 255, 3, 0, 0, 0, 0, 1, 8, 1, 9, 9, 9, 9})
	widths := [4]int{1, 2, 4, 8}
	f.Fuzz(func(t *testing.T, ops []byte) {
		for len(ops) >= 7 {
			op, off, w := ops[0], uint64(ops[1]), widths[ops[2]&3]
			val := binary.LittleEndian.Uint32(ops[3:7])
			ops = ops[7:]
			buf := make([]byte, w)
			for i := range buf {
				buf[i] = byte(val >> (8 * (i % 4)))
			}
			if off+uint64(w) > RegsSize {
				continue // the bus never delivers these
			}
			reg := w == 4 && off%4 == 0 && off <= RegDoorbell
			if op&1 == 0 {
				d.Read(0, off, buf)
				got := uint32(0)
				if w >= 4 {
					got = binary.LittleEndian.Uint32(buf)
				}
				switch {
				case !reg:
					for _, b := range buf {
						if b != 0 {
							t.Fatalf("read of %d bytes at %#x returned %x", w, off, buf)
						}
					}
				case off == RegIVPosition && got != id:
					t.Fatalf("IVPosition %d, want %d", got, id)
				case off == RegDoorbell && got != 0:
					t.Fatalf("doorbell reads %#x", got)
				}
				continue
			}
			d.Write(0, off, buf)
			if reg && off == RegIntrMask {
				if got := rd(d, RegIntrMask); got != val {
					t.Fatalf("mask reads %#x after writing %#x", got, val)
				}
			}
			d.mu.Lock()
			want := d.intrStatus&d.intrMask != 0
			lvl, _ := irq.get()
			d.mu.Unlock()
			if lvl != want {
				t.Fatalf("INTA# %v with status %#x mask %#x", lvl, d.intrStatus, d.intrMask)
			}
		}
	})
}
