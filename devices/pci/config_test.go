package pci

import (
	"encoding/binary"
	"errors"
	"testing"
)

func newTestBus(t *testing.T) (*Bus, *recHost, *ConfigSpace) {
	h := newRecHost()
	b := NewBus(h, testWindows)
	cfg := NewConfigSpace(Header{VendorID: 0x1234, DeviceID: 0x5678, Class: 0x020000, Revision: 7,
		SubsysVendor: 0xaaaa, SubsysID: 0xbbbb, InterruptPin: 1})
	must(t, cfg.SetBAR(0, BAR{Size: 0x1000, Handler: nullDev{}}))
	must(t, b.Add(2, &testDev{cfg}))
	return b, h, cfg
}

// Mechanism 1: CONFIG_DATA answers 1-, 2- and 4-byte accesses at each
// offset that stays inside the register, for any register offset.
func TestMechanism1Widths(t *testing.T) {
	b, _, _ := newTestBus(t)
	want := []byte{0x34, 0x12, 0x78, 0x56, 0, 0, 0, 0, 7, 0, 0, 2}
	for reg := 0; reg < 12; reg += 4 {
		cf8(b, 2, reg)
		for width := 1; width <= 4; width *= 2 {
			for off := 0; off+width <= 4; off++ {
				got := make([]byte, width)
				b.Read(0xcf8, uint64(4+off), got)
				for i := range got {
					if got[i] != want[reg+off+i] {
						t.Fatalf("reg %#x width %d offset %d: %x", reg, width, off, got)
					}
				}
			}
		}
	}
	// Accesses to 0xcf8 other than 4 bytes do not touch CONFIG_ADDRESS.
	cf8(b, 2, 0)
	b.Write(0xcf8, 0, []byte{0})
	b.Write(0xcf8, 2, []byte{0, 0})
	if got := cfgRead32(b, 2, 0); got != 0x5678_1234 {
		t.Fatalf("after narrow writes to 0xcf8: %#x", got)
	}
	var a [4]byte
	b.Read(0xcf8, 0, a[:])
	if binary.LittleEndian.Uint32(a[:]) != 0x8000_1000 {
		t.Fatalf("CONFIG_ADDRESS reads %#x", binary.LittleEndian.Uint32(a[:]))
	}
	// Enable bit clear, another bus or function: all ones.
	for _, addr := range []uint32{0x0000_1000, 0x8001_1000, 0x8000_1100} {
		binary.LittleEndian.PutUint32(a[:], addr)
		b.Write(0xcf8, 0, a[:])
		var d [4]byte
		b.Read(0xcf8, 4, d[:])
		if binary.LittleEndian.Uint32(d[:]) != 0xffff_ffff {
			t.Fatalf("address %#x reads %x", addr, d)
		}
		b.Write(0xcf8, 4, []byte{0, 0, 0, 0}) // ignored
	}
	if got := cfgRead32(b, 2, 0); got != 0x5678_1234 {
		t.Fatalf("ignored write changed the device: %#x", got)
	}
	// Byte writes at each offset of the data port land in the right byte.
	cf8(b, 2, 0x3c)
	b.Write(0xcf8, 4, []byte{0x0b})
	b.Write(0xcf8, 5, []byte{0x04}) // interrupt pin: read-only
	if got := cfgRead32(b, 2, 0x3c); got&0xffff != 0x010b {
		t.Fatalf("interrupt line/pin %#x", got)
	}
	cf8(b, 2, 0x0c)
	b.Write(0xcf8, 5, []byte{0x40})
	b.Write(0xcf8, 6, []byte{0x80}) // header type: read-only
	if got := cfgRead32(b, 2, 0x0c); got != 0x4000 {
		t.Fatalf("latency/header type %#x", got)
	}
}

func TestMasks(t *testing.T) {
	b, _, cfg := newTestBus(t)
	cfgWrite32(b, 2, 0, 0xffff_ffff)
	cfgWrite32(b, 2, 8, 0xffff_ffff)
	cfgWrite32(b, 2, 0x2c, 0xffff_ffff)
	cfgWrite32(b, 2, 0x30, 0xffff_ffff)
	if cfgRead32(b, 2, 0) != 0x5678_1234 || cfgRead32(b, 2, 8) != 0x0200_0007 ||
		cfgRead32(b, 2, 0x2c) != 0xbbbb_aaaa || cfgRead32(b, 2, 0x30) != 0 {
		t.Fatal("read-only identity registers changed")
	}
	// Command: only the defined bits stick.
	cfgWrite32(b, 2, 4, 0xffff)
	if got := cfgRead32(b, 2, 4) & 0xffff; got != commandWritable {
		t.Fatalf("command %#x", got)
	}
	cfgWrite32(b, 2, 4, 0)
	// Status: error bits are write-1-to-clear, others read-only.
	cfg.PutUint16(RegStatus, 0xf900|StatusCapList)
	cfgWrite32(b, 2, 4, 0x1100_0000) // clear bits 8 and 12
	if got := cfg.Uint16(RegStatus); got != 0xe800|StatusCapList {
		t.Fatalf("status after W1C %#x", got)
	}
	cfgWrite32(b, 2, 4, 0x0010_0000) // bit 4 is not W1C
	if cfg.Uint16(RegStatus)&StatusCapList == 0 {
		t.Fatal("capability-list bit cleared")
	}
	// Unused BARs read zero and size to zero.
	cfgWrite32(b, 2, 0x14, 0xffff_ffff)
	if cfgRead32(b, 2, 0x14) != 0 {
		t.Fatal("unused BAR sizes as non-zero")
	}
}

func TestCapabilityList(t *testing.T) {
	cfg := NewConfigSpace(Header{VendorID: 1})
	if cfg.Uint16(RegStatus)&StatusCapList != 0 || len(cfg.Capabilities()) != 0 {
		t.Fatal("empty list advertised")
	}
	a, err := cfg.AddCapability(0x09, []byte{5, 1, 2})
	must(t, err)
	bOff, err := cfg.AddCapability(0x05, make([]byte, 12))
	must(t, err)
	c, err := cfg.AddCapability(0x10, []byte{7})
	must(t, err)
	if a != 0x40 || bOff != 0x48 || c != 0x58 {
		t.Fatalf("offsets %#x %#x %#x", a, bOff, c)
	}
	if cfg.Uint8(RegCapPtr) != 0x40 || cfg.Uint8(a+1) != byte(bOff) || cfg.Uint8(bOff+1) != byte(c) ||
		cfg.Uint8(c+1) != 0 || cfg.Uint8(a+2) != 5 || cfg.Uint16(RegStatus)&StatusCapList == 0 {
		t.Fatal("list not linked")
	}
	if got := cfg.Capabilities(); len(got) != 3 || got[2] != c {
		t.Fatalf("Capabilities() = %v", got)
	}
	// The guest cannot rewrite the list.
	cfg.Write(RegCapPtr, []byte{0x80})
	cfg.Write(a, []byte{0xff, 0xff, 0xff})
	if cfg.Uint8(RegCapPtr) != 0x40 || cfg.Uint8(a) != 0x09 || cfg.Uint8(a+2) != 5 {
		t.Fatal("capability bytes writable without a mask")
	}
	must(t, cfg.SetWriteMask(a+2, []byte{0x0f}))
	cfg.Write(a+2, []byte{0xff})
	if cfg.Uint8(a+2) != 0x0f {
		t.Fatalf("masked capability byte %#x", cfg.Uint8(a+2))
	}
	if _, err := cfg.AddCapability(0x11, make([]byte, 200)); !errors.Is(err, ErrNoCapSpace) {
		t.Fatalf("oversized capability: %v", err)
	}
}

func TestSetBARRejects(t *testing.T) {
	for _, c := range []struct {
		i int
		b BAR
	}{
		{6, BAR{Size: 16, Handler: nullDev{}}},
		{0, BAR{Size: 8, Handler: nullDev{}}},
		{0, BAR{Size: 0x3000, Handler: nullDev{}}},
		{0, BAR{Size: 2, IO: true, Handler: nullDev{}}},
		{0, BAR{Size: 16, IO: true, Is64: true, Handler: nullDev{}}},
		{5, BAR{Size: 16, Is64: true, Handler: nullDev{}}},
		{0, BAR{Size: 1 << 32, Handler: nullDev{}}},
		{0, BAR{Size: 4096, RAM: make([]byte, 100)}},
		{0, BAR{Size: 4096}},
	} {
		cfg := NewConfigSpace(Header{})
		if err := cfg.SetBAR(c.i, c.b); err == nil {
			t.Errorf("BAR %d %+v accepted", c.i, c.b)
		}
	}
	cfg := NewConfigSpace(Header{})
	must(t, cfg.SetBAR(0, BAR{Size: 16, Is64: true, Handler: nullDev{}}))
	if err := cfg.SetBAR(1, BAR{Size: 16, Handler: nullDev{}}); err == nil {
		t.Error("upper half of a 64-bit BAR reused")
	}
}

// FuzzConfigSpace writes fuzzed values at fuzzed offsets through mechanism
// 1 and checks the invariants: identity read-only, BARs keep their type
// bits and alignment, every read answers, and mappings stay consistent.
func FuzzConfigSpace(f *testing.F) {
	f.Add([]byte{0x04, 0x03, 0, 0, 0, 0x10, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x04, 0x07, 0, 0, 0, 0x14, 0x01, 0, 0, 0})
	f.Add([]byte{0x42, 0x00, 0xc0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		h := newRecHost()
		b := NewBus(h, testWindows)
		cfg := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1042, Class: 0x010000})
		must(t, cfg.SetBAR(0, BAR{Size: 0x4000, Is64: true, Prefetch: true, Handler: nullDev{}}))
		must(t, cfg.SetBAR(2, BAR{Size: 0x1000, Handler: nullDev{}}))
		must(t, cfg.SetBAR(4, BAR{Size: 0x100, IO: true, Handler: nullDev{}}))
		m, err := NewMSIX(cfg, MSIXConfig{Vectors: 4, TableBAR: 2, PBABAR: 2, PBAOffset: 0x800, Signaler: &recSignaler{}})
		must(t, err)
		must(t, b.Add(1, &testDev{cfg}))
		for len(ops) >= 5 {
			reg, w := int(ops[0]), int(ops[1]>>6)
			width := 1 << (w % 3)
			var d [4]byte
			copy(d[:], ops[1:5])
			ops = ops[5:]
			cf8(b, 1, reg)
			off := reg & 3
			if off+width > 4 {
				off = 0
			}
			b.Write(0xcf8, uint64(4+off), d[:width])
			b.Read(0xcf8, uint64(4+off), d[:width])
			m.Notify(int(ops0(ops)) % 6)
		}
		if cfgRead32(b, 1, 0) != 0x1042_1af4 || cfgRead32(b, 1, 8)>>8 != 0x010000 {
			t.Fatal("identity changed")
		}
		if lo := cfgRead32(b, 1, 0x10); lo&0xf != 0xc || lo&0x3ff0 != 0 {
			t.Fatalf("BAR0 %#x lost its type or alignment", lo)
		}
		if io := cfgRead32(b, 1, 0x20); io&3 != 1 || io&0xfc != 0 {
			t.Fatalf("BAR4 %#x", io)
		}
		// The host holds exactly the mappings the bus believes in.
		n := 0
		for _, d := range b.Devices() {
			for _, bar := range d.BARs {
				if bar.Mapped {
					n++
					if mm, ok := h.active[bar.Addr]; !ok || mm.Size != bar.Size {
						t.Fatalf("BAR %d mapped at %#x but host has %+v", bar.Index, bar.Addr, mm)
					}
				}
			}
		}
		if n != len(h.active) {
			t.Fatalf("%d mapped BARs, host has %d", n, len(h.active))
		}
		must(t, b.Remove(1))
		if len(h.active) != 0 {
			t.Fatal("mappings left after Remove")
		}
	})
}

func ops0(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}
