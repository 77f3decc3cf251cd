package rtc

import (
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/vmstate"
)

// stateVersion is the version of the CMOS's saved state:
//
//	u32 version
//	u8  index register
//	128 bytes of CMOS RAM (registers A-D and the NVRAM; the time bytes
//	    are not used: time is computed)
//	u64 guest time minus host time, in nanoseconds (two's complement)
//	u8  time frozen (bool: register B SET held it), then the frozen time
//	    as u64 Unix seconds (two's complement) and u32 nanoseconds, both 0
//	    when not frozen
//
// Time continues as QEMU's RTC does with its default host clock: the
// offset, not the time, is kept, so after a load the guest reads the
// host's time now plus the offset it had set.
const stateVersion = 1

// Register B interrupt enables and square wave (cleared by RESET, MC146818
// datasheet "RESET"). The model raises no interrupts (no IRQ 8 line); the
// bits are only stored.
const regBResetBits = 0x40 | 0x20 | 0x10 | 0x08 // PIE, AIE, UIE, SQWE

var _ vmstate.Stater = (*CMOS)(nil)

// Reset is the MC146818's RESET input, which a machine reset drives: the
// interrupt enables and square wave output in register B and every flag in
// register C clear. The clock, the NVRAM and the index register are
// battery-backed and stay, as QEMU's rtc_reset keeps them.
func (c *CMOS) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nvram[RegB] &^= regBResetBits
	c.nvram[RegC] = 0
}

// SaveState implements vmstate.Stater.
func (c *CMOS) SaveState(e *vmstate.Enc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.U32(stateVersion)
	e.U8(c.index)
	e.Fixed(c.nvram[:])
	e.U64(uint64(c.offset))
	e.Bool(!c.frozen.IsZero())
	var sec int64
	var nsec uint32
	if !c.frozen.IsZero() {
		sec, nsec = c.frozen.Unix(), uint32(c.frozen.Nanosecond())
	}
	e.U64(uint64(sec))
	e.U32(nsec)
}

// LoadState implements vmstate.Stater. A value the CMOS cannot hold (an
// index above 0x7f, UIP stored in register A, a frozen time without
// register B's SET bit) is refused and nothing changes.
func (c *CMOS) LoadState(d *vmstate.Dec) error {
	d.Version(stateVersion)
	index := d.U8()
	var nvram [nvramSize]uint8
	d.FixedInto(nvram[:])
	offset := time.Duration(d.U64())
	isFrozen := d.Bool()
	sec, nsec := int64(d.U64()), d.U32()
	if err := d.Finish(); err != nil {
		return err
	}
	var frozen time.Time
	if isFrozen {
		frozen = time.Unix(sec, int64(nsec)).UTC()
	}
	switch {
	case index > 0x7f:
		return fmt.Errorf("%w: rtc: index register %#x", vmstate.ErrCorrupt, index)
	case nvram[RegA]&regAUIP != 0:
		return fmt.Errorf("%w: rtc: register A %#x holds UIP", vmstate.ErrCorrupt, nvram[RegA])
	case nsec >= 1e9:
		return fmt.Errorf("%w: rtc: frozen time has %d nanoseconds", vmstate.ErrCorrupt, nsec)
	case !isFrozen && (sec != 0 || nsec != 0):
		return fmt.Errorf("%w: rtc: a frozen time but no frozen flag", vmstate.ErrCorrupt)
	case isFrozen && (frozen.IsZero() || nvram[RegB]&regBSet == 0):
		return fmt.Errorf("%w: rtc: frozen time %v with register B %#x", vmstate.ErrCorrupt, frozen, nvram[RegB])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index, c.nvram, c.offset, c.frozen = index, nvram, offset, frozen
	return nil
}
