package acpi

import (
	"sync"
	"sync/atomic"
)

// IRQLine is a level-triggered interrupt line. It has the shape of
// devices/pci.IRQLine, so machine/pc passes the same SCI line object to both.
type IRQLine interface{ SetLevel(asserted bool) }

// GPE is the GPE0 block at GPE0Base (ACPI 6.x section 4.8.4.1): two status
// bytes (write 1 to clear) followed by two enable bytes. The SCI is asserted
// while any bit is set in both status and enable.
//
// The access rules are those of the PIIX4 interface: byte access only; any
// other width, or an offset outside the block, reads as 0xff and ignores
// writes, counted in BadAccesses.
type GPE struct {
	// mu guards sts, en and asserted and is held while calling sci.SetLevel
	// so that level changes reach the line in the order they were decided.
	// Lock order: Hotplug.mu before GPE.mu.
	mu       sync.Mutex
	sts, en  uint16
	asserted bool
	sci      IRQLine

	// BadAccesses counts accesses with a width or offset the block ignores,
	// and Raise calls with a bit outside the block.
	BadAccesses atomic.Uint64
}

// NewGPE returns a GPE block with all bits clear, signalling the SCI on sci
// (which may be nil for a block without an interrupt line, as in tests).
func NewGPE(sci IRQLine) *GPE { return &GPE{sci: sci} }

// Raise sets status bit bit (0..GPEBits-1) and asserts the SCI if the bit is
// enabled. A bit outside the block is ignored and counted.
func (g *GPE) Raise(bit uint) {
	if bit >= GPEBits {
		g.BadAccesses.Add(1)
		return
	}
	g.mu.Lock()
	g.sts |= 1 << bit
	g.updateLocked()
	g.mu.Unlock()
}

// PressPowerButton raises GPEPowerButton; the DSDT's \_GPE._E02 turns it into
// Notify(\_SB.PWRB, 0x80), on which an OS shuts down.
func (g *GPE) PressPowerButton() { g.Raise(GPEPowerButton) }

// Reset returns the block to its power-on state (all status and enable
// bits clear, SCI deasserted), for a machine reset that keeps its devices.
func (g *GPE) Reset() {
	g.mu.Lock()
	g.sts, g.en = 0, 0
	g.updateLocked()
	g.mu.Unlock()
}

// Status returns the status and enable registers (for tests and monitors).
func (g *GPE) Status() (status, enable uint16) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sts, g.en
}

// Asserted reports whether the SCI is currently asserted.
func (g *GPE) Asserted() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.asserted
}

func (g *GPE) updateLocked() {
	level := g.sts&g.en != 0
	if level == g.asserted {
		return
	}
	g.asserted = level
	if g.sci != nil {
		g.sci.SetLevel(level)
	}
}

// Read implements vmm.BusDevice.
func (g *GPE) Read(base, offset uint64, data []byte) {
	if len(data) != 1 || offset >= GPE0Len {
		g.BadAccesses.Add(1)
		fill(data, 0xff)
		return
	}
	g.mu.Lock()
	reg := g.sts
	if offset >= GPE0Len/2 {
		reg = g.en
	}
	g.mu.Unlock()
	data[0] = byte(reg >> (8 * (offset % 2)))
}

// Write implements vmm.BusDevice.
func (g *GPE) Write(base, offset uint64, data []byte) {
	if len(data) != 1 || offset >= GPE0Len {
		g.BadAccesses.Add(1)
		return
	}
	shift := 8 * (offset % 2)
	v := uint16(data[0]) << shift
	g.mu.Lock()
	if offset < GPE0Len/2 {
		g.sts &^= v // write 1 to clear
	} else {
		g.en = g.en&^(0xff<<shift) | v
	}
	g.updateLocked()
	g.mu.Unlock()
}

func fill(data []byte, v byte) {
	for i := range data {
		data[i] = v
	}
}
