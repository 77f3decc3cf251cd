package acpi

import (
	"encoding/binary"
	"testing"
)

// FuzzRegisters drives the GPE block and the hotplug controller with a
// guest-chosen sequence of accesses (any width, any offset, any value) mixed
// with host Plug/Unplug/PressPowerButton calls, and checks them against a
// reference model of the registers after every step, plus the invariants:
// the SCI line equals status&enable != 0, only hot-pluggable slots are ever
// pending or ejected, and odd accesses read as all-ones.
func FuzzRegisters(f *testing.F) {
	f.Add(uint32(0xfffffffe), []byte{0, 2, 1, 6, 3, 1, 0x42, 0, 0, 0})
	f.Add(uint32(0x000000f0), []byte{5, 3, 4, 4, 0xf0, 1, 2, 1, 0, 8, 4, 0xff})
	f.Add(uint32(0x80000002), []byte{7, 0x0c, 4, 0, 1, 0, 0, 0x80, 6, 0x08, 4, 0x02, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, mask uint32, ops []byte) {
		mask &^= 1
		line := &recLine{}
		g := NewGPE(line)
		var ejected []int
		h, err := NewHotplug(g, mask, func(s int) { ejected = append(ejected, s) })
		if err != nil {
			t.Fatal(err)
		}
		var sts, en uint16 // model
		var up, down uint32
		for len(ops) >= 3 {
			op, off, width := ops[0]%8, uint64(ops[1]%24), int(ops[2]%9)
			ops = ops[3:]
			data := make([]byte, width)
			n := copy(data, ops)
			ops = ops[n:]
			slot := int(off) + int(op&1)*8 - 4 // reaches -4..27+8
			switch op {
			case 0, 1: // GPE read
				g.Read(GPE0Base, off, data)
				want := byte(0xff)
				if width == 1 && off < GPE0Len {
					reg := sts
					if off >= 2 {
						reg = en
					}
					want = byte(reg >> (8 * (off % 2)))
				}
				for _, b := range data {
					if b != want {
						t.Fatalf("GPE read off %d width %d = %x, want %#x", off, width, data, want)
					}
				}
			case 2, 3: // GPE write
				g.Write(GPE0Base, off, data)
				if width == 1 && off < GPE0Len {
					sh := 8 * (off % 2)
					if off < 2 {
						sts &^= uint16(data[0]) << sh
					} else {
						en = en&^(0xff<<sh) | uint16(data[0])<<sh
					}
				}
			case 4: // hotplug read
				h.Read(HotplugBase, off, data)
				if width == 4 && off%4 == 0 && off < HotplugLen {
					want := [4]uint32{up, down, 0, mask}[off/4]
					if got := binary.LittleEndian.Uint32(data); got != want {
						t.Fatalf("hotplug read off %d = %#x, want %#x", off, got, want)
					}
				} else {
					for _, b := range data {
						if b != 0xff {
							t.Fatalf("odd hotplug read off %d width %d = %x", off, width, data)
						}
					}
				}
			case 5: // hotplug write
				before := len(ejected)
				h.Write(HotplugBase, off, data)
				var want []int
				if width == 4 && off == HotplugEjectOffset {
					bits := binary.LittleEndian.Uint32(data) & mask
					up &^= bits
					down &^= bits
					for s := 0; s < 32; s++ {
						if bits&(1<<uint(s)) != 0 {
							want = append(want, s)
						}
					}
				}
				got := ejected[before:]
				if len(got) != len(want) {
					t.Fatalf("eject wrote %x: callbacks %v, want %v", data, got, want)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("eject wrote %x: callbacks %v, want %v", data, got, want)
					}
				}
			case 6, 7: // host side
				ok := slot >= 0 && slot < 32 && mask&(1<<uint(slot)) != 0
				var err error
				switch {
				case width == 0:
					g.PressPowerButton()
					sts |= 1 << GPEPowerButton
					ok = true
				case op == 6:
					err = h.Plug(slot)
					if ok {
						up |= 1 << uint(slot)
					}
				default:
					err = h.Unplug(slot)
					if ok {
						down |= 1 << uint(slot)
					}
				}
				if width != 0 && (err == nil) != ok {
					t.Fatalf("plug/unplug slot %d (mask %#x): err %v", slot, mask, err)
				}
				if width != 0 && ok {
					sts |= 1 << GPEPCIHotplug
				}
			}
			gs, ge := g.Status()
			if gs != sts || ge != en {
				t.Fatalf("GPE %#x/%#x, model %#x/%#x", gs, ge, sts, en)
			}
			gu, gd := h.Pending()
			if gu != up || gd != down || (gu|gd)&^mask != 0 {
				t.Fatalf("hotplug up %#x down %#x, model %#x %#x, mask %#x", gu, gd, up, down, mask)
			}
			lv, _ := line.last()
			if want := sts&en != 0; g.Asserted() != want || lv != want {
				t.Fatalf("SCI %v (line %v), want %v", g.Asserted(), lv, want)
			}
		}
	})
}
