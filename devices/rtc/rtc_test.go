package rtc

import (
	"testing"
	"time"
)

func rd(c *CMOS, reg uint8) uint8 {
	c.Write(0, 0, []byte{reg | 0x80}) // NMI-disable bit must be ignored
	b := []byte{0}
	c.Read(0, 1, b)
	return b[0]
}

func wr(c *CMOS, reg, v uint8) {
	c.Write(0, 0, []byte{reg})
	c.Write(0, 1, []byte{v})
}

func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestTimeBCDAndBinary(t *testing.T) {
	c := New(256<<20, 0)
	c.SetClock(fixed(time.Date(2026, 11, 25, 21, 7, 59, 0, time.UTC)))
	if b := rd(c, RegB); b&regB24h == 0 || b&regBBinary != 0 {
		t.Fatalf("register B %#x: want 24h BCD", b)
	}
	for _, tc := range []struct{ reg, want uint8 }{
		{RegSeconds, 0x59}, {RegMinutes, 0x07}, {RegHours, 0x21}, {RegDay, 0x25},
		{RegMonth, 0x11}, {RegYear, 0x26}, {RegCentury, 0x20}, {RegWeekday, 0x04},
	} {
		if got := rd(c, tc.reg); got != tc.want {
			t.Errorf("BCD reg %#x = %#x, want %#x", tc.reg, got, tc.want)
		}
	}
	wr(c, RegB, regB24h|regBBinary)
	if rd(c, RegHours) != 21 || rd(c, RegSeconds) != 59 || rd(c, RegYear) != 26 {
		t.Fatal("binary mode values wrong")
	}
	wr(c, RegB, regBBinary) // 12-hour binary: 21h = 9 PM
	if h := rd(c, RegHours); h != 9|pmBit {
		t.Fatalf("12h hour %#x, want 0x89", h)
	}
	wr(c, RegB, 0) // 12-hour BCD
	if h := rd(c, RegHours); h != 0x09|pmBit {
		t.Fatalf("12h BCD hour %#x", h)
	}
}

func TestSetTimeMovesOffset(t *testing.T) {
	host := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(64<<20, 0)
	c.SetClock(fixed(host))
	// The guest sets the year to 1999 the way firmware does: SET, write, unSET.
	wr(c, RegB, regBSet|regB24h)
	wr(c, RegCentury, 0x19)
	wr(c, RegYear, 0x99)
	wr(c, RegHours, 0x13)
	wr(c, RegB, regB24h)
	if rd(c, RegYear) != 0x99 || rd(c, RegCentury) != 0x19 || rd(c, RegHours) != 0x13 {
		t.Fatalf("set time not kept: year %#x century %#x hour %#x", rd(c, RegYear), rd(c, RegCentury), rd(c, RegHours))
	}
	// Time moves on with the host clock.
	c.SetClock(fixed(host.Add(61 * time.Second)))
	if rd(c, RegMinutes) != 0x01 || rd(c, RegSeconds) != 0x01 {
		t.Fatal("clock did not advance with the host")
	}
}

func TestStatusRegistersAndNVRAM(t *testing.T) {
	c := New(512<<20, 2<<30)
	if rd(c, RegD) != regDVRT {
		t.Fatal("register D valid bit")
	}
	c.nvram[RegC] = 0xc0
	if rd(c, RegC) != 0xc0 || rd(c, RegC) != 0 {
		t.Fatal("register C not cleared on read")
	}
	wr(c, RegD, 0)
	if rd(c, RegD) != regDVRT {
		t.Fatal("register D writable")
	}
	wr(c, 0x40, 0x5a)
	if rd(c, 0x40) != 0x5a {
		t.Fatal("NVRAM byte not kept")
	}
	// Memory size fields as QEMU's pc_cmos_init.
	if got := int(rd(c, 0x34)) | int(rd(c, 0x35))<<8; got != (512-16)<<4 {
		t.Fatalf("RAM above 16 MiB = %d x 64 KiB", got)
	}
	if got := int(rd(c, 0x5b)) | int(rd(c, 0x5c))<<8 | int(rd(c, 0x5d))<<16; got != (2<<30)>>16 {
		t.Fatalf("RAM above 4 GiB = %d x 64 KiB", got)
	}
	b := []byte{0, 0}
	c.Read(0, 1, b)
	if b[0] != 0xff {
		t.Fatal("wide read not all ones")
	}
	one := []byte{0}
	c.Read(0, 0, one)
	if one[0] != 0xff {
		t.Fatal("index port readable")
	}
}

// FuzzCMOS drives random index/data accesses: no panic, and time
// registers always hold valid BCD in BCD mode.
func FuzzCMOS(f *testing.F) {
	f.Add([]byte{0x0b, 0x86, 0x09, 0x99, 0x0b, 0x02})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := New(64<<20, 0)
		c.SetClock(fixed(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)))
		for i := 0; i+1 < len(ops); i += 2 {
			wr(c, ops[i]&0x7f, ops[i+1])
			rd(c, ops[i+1]&0x7f)
		}
		wr(c, RegB, regB24h)
		for _, r := range []uint8{RegSeconds, RegMinutes, RegHours, RegDay, RegMonth, RegYear} {
			if v := rd(c, r); v&0xf > 9 || v>>4 > 9 {
				t.Fatalf("register %#x = %#x is not BCD", r, v)
			}
		}
	})
}
