// Package rtc is the PC's MC146818 CMOS real-time clock and NVRAM at ports
// 0x70 (index; bit 7 is the NMI mask, ignored) and 0x71 (data). Time
// registers read the host clock plus an offset the guest sets by writing
// them, in BCD or binary and 12- or 24-hour form per register B.
package rtc

import (
	"sync"
	"time"
)

// Registers (MC146818 datasheet; century at 0x32 as on PCs).
const (
	RegSeconds = 0x00
	RegMinutes = 0x02
	RegHours   = 0x04
	RegWeekday = 0x06
	RegDay     = 0x07
	RegMonth   = 0x08
	RegYear    = 0x09
	RegA       = 0x0a
	RegB       = 0x0b
	RegC       = 0x0c
	RegD       = 0x0d
	RegCentury = 0x32

	regAUIP    = 0x80
	regBSet    = 0x80
	regB24h    = 0x02
	regBBinary = 0x04
	regDVRT    = 0x80
	pmBit      = 0x80 // hour register bit 7 in 12-hour mode

	nvramSize = 128
)

// CMOS is the RTC plus NVRAM. It is a vmm.BusDevice inserted at Port with
// size Ports. The time registers are not stored: they are computed on each
// read from the host clock plus offset, so the guest's clock never drifts
// from the host's beyond what the guest itself set.
type CMOS struct {
	// mu guards every field; Read and Write hold it for the whole access.
	mu sync.Mutex
	// index is the register selected by the last write to the index port
	// (Port); bit 7, the NMI mask on real hardware, is dropped.
	index uint8
	// nvram holds the 128 CMOS bytes. The time and date registers in it
	// are not used for reads, which compute them from now and offset
	// (frozen while SET is on); of the status registers, A's UIP bit and
	// all of D are computed and C clears on read; the rest of the NVRAM
	// is used as stored.
	nvram  [nvramSize]uint8
	offset time.Duration // guest time minus host time
	frozen time.Time     // time while register B SET is 1
	// now is the host clock, time.Now but for tests.
	now func() time.Time
}

// New returns a CMOS with register B in 24-hour BCD mode (as PC firmware
// leaves it), register D's valid-RAM bit set, and memory sizes recorded
// like QEMU's pc_cmos_init: lowMem bytes below 4 GiB, highMem above.
func New(lowMem, highMem uint64) *CMOS {
	c := &CMOS{now: time.Now}
	c.nvram[RegA] = 0x26 // 32.768 kHz divider, 1024 Hz rate
	c.nvram[RegB] = regB24h
	c.nvram[RegD] = regDVRT
	// The memory-size bytes BIOSes and old kernels read (IBM PC/AT CMOS
	// map, as QEMU's pc_cmos_init fills them), little-endian: 0x15-0x16
	// base memory in KiB (640), 0x17-0x18 and 0x30-0x31 extended memory
	// above 1 MiB in KiB (capped at 0xffff), 0x34-0x35 memory above 16 MiB
	// in 64 KiB units, 0x5b-0x5d memory above 4 GiB in 64 KiB units.
	c.nvram[0x15], c.nvram[0x16] = 0x80, 0x02
	ext := uint64(0)
	if lowMem > 1<<20 {
		ext = (lowMem - 1<<20) >> 10 // KiB above 1 MiB
	}
	ext = min(ext, 0xffff)
	c.nvram[0x17], c.nvram[0x18] = uint8(ext), uint8(ext>>8)
	c.nvram[0x30], c.nvram[0x31] = uint8(ext), uint8(ext>>8)
	above16 := uint64(0)
	if lowMem > 16<<20 {
		above16 = min((lowMem-16<<20)>>16, 0xffff) // 64 KiB units
	}
	c.nvram[0x34], c.nvram[0x35] = uint8(above16), uint8(above16>>8)
	hi := highMem >> 16
	c.nvram[0x5b], c.nvram[0x5c], c.nvram[0x5d] = uint8(hi), uint8(hi>>8), uint8(hi>>16)
	return c
}

// SetClock replaces the host clock (tests).
func (c *CMOS) SetClock(now func() time.Time) {
	c.mu.Lock()
	c.now = now
	c.mu.Unlock()
}

// guestTime is the time the registers show: frozen at the moment the
// guest set register B's SET bit (an update in progress), else the host
// clock plus the guest's offset.
func (c *CMOS) guestTime() time.Time {
	if c.nvram[RegB]&regBSet != 0 && !c.frozen.IsZero() {
		return c.frozen
	}
	return c.now().UTC().Add(c.offset)
}

// toReg encodes v (0-99) as register B's data mode asks: binary, or BCD.
func (c *CMOS) toReg(v int) uint8 {
	if c.nvram[RegB]&regBBinary != 0 {
		return uint8(v)
	}
	return uint8(v/10<<4 | v%10)
}

// fromReg decodes a register value written by the guest in the current
// data mode. Invalid BCD digits are taken at face value; the time they
// yield is normalised by time.Date (FuzzCMOS checks reads stay BCD).
func (c *CMOS) fromReg(v uint8) int {
	if c.nvram[RegB]&regBBinary != 0 {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0xf)
}

// hourReg encodes hour h (0-23) in 24-hour form, or in 12-hour form with
// bit 7 as PM and 12 for midnight and noon, as register B's bit 1 asks.
func (c *CMOS) hourReg(h int) uint8 {
	if c.nvram[RegB]&regB24h != 0 {
		return c.toReg(h)
	}
	pm := uint8(0)
	if h >= 12 {
		pm = pmBit
	}
	h %= 12
	if h == 0 {
		h = 12
	}
	return c.toReg(h) | pm
}

// hourFromReg is hourReg's inverse.
func (c *CMOS) hourFromReg(v uint8) int {
	if c.nvram[RegB]&regB24h != 0 {
		return c.fromReg(v)
	}
	h := c.fromReg(v&^pmBit) % 12
	if v&pmBit != 0 {
		h += 12
	}
	return h
}

// readReg returns register i.
func (c *CMOS) readReg(i uint8) uint8 {
	t := c.guestTime()
	switch i {
	case RegSeconds:
		return c.toReg(t.Second())
	case RegMinutes:
		return c.toReg(t.Minute())
	case RegHours:
		return c.hourReg(t.Hour())
	case RegWeekday:
		return c.toReg(int(t.Weekday()) + 1)
	case RegDay:
		return c.toReg(t.Day())
	case RegMonth:
		return c.toReg(int(t.Month()))
	case RegYear:
		return c.toReg(t.Year() % 100)
	case RegCentury:
		return c.toReg(t.Year() / 100)
	case RegA:
		// UIP is set in the last ~244 µs before each second's update.
		v := c.nvram[RegA] &^ regAUIP
		if c.now().Nanosecond() >= 1e9-244e3 {
			v |= regAUIP
		}
		return v
	case RegC:
		v := c.nvram[RegC]
		c.nvram[RegC] = 0 // read clears the interrupt flags
		return v
	case RegD:
		return regDVRT
	}
	return c.nvram[i]
}

// writeReg sets register i; time writes move the guest clock offset.
func (c *CMOS) writeReg(i, v uint8) {
	switch i {
	case RegSeconds, RegMinutes, RegHours, RegDay, RegMonth, RegYear, RegCentury:
		t := c.guestTime()
		y, mo, d := t.Date()
		h, mi, s := t.Clock()
		switch i {
		case RegSeconds:
			s = c.fromReg(v) % 60
		case RegMinutes:
			mi = c.fromReg(v) % 60
		case RegHours:
			h = c.hourFromReg(v) % 24
		case RegDay:
			d = c.fromReg(v)
		case RegMonth:
			mo = time.Month(c.fromReg(v))
		case RegYear:
			y = y/100*100 + c.fromReg(v)%100
		case RegCentury:
			y = c.fromReg(v)*100 + y%100
		}
		nt := time.Date(y, mo, d, h, mi, s, 0, time.UTC)
		if c.nvram[RegB]&regBSet != 0 {
			c.frozen = nt
		} else {
			c.offset = nt.Sub(c.now().UTC())
		}
	case RegWeekday:
		// Derived from the date.
	case RegA:
		c.nvram[RegA] = v &^ regAUIP
	case RegB:
		old := c.nvram[RegB]
		if v&regBSet != 0 && old&regBSet == 0 {
			c.frozen = c.guestTime()
		}
		if v&regBSet == 0 && old&regBSet != 0 && !c.frozen.IsZero() {
			c.offset = c.frozen.Sub(c.now().UTC())
			c.frozen = time.Time{}
		}
		c.nvram[RegB] = v
	case RegC, RegD:
		// Read-only.
	default:
		c.nvram[i] = v
	}
}

// Read implements vmm.BusDevice (offset 0: index port, 1: data port).
func (c *CMOS) Read(base, offset uint64, data []byte) {
	if len(data) != 1 {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if offset == 0 {
		data[0] = 0xff // the index register is write-only
		return
	}
	data[0] = c.readReg(c.index)
}

// Write implements vmm.BusDevice.
func (c *CMOS) Write(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if offset == 0 {
		c.index = data[0] & 0x7f // bit 7 masks NMIs: ignored
		return
	}
	c.writeReg(c.index, data[0])
}
