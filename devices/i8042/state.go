package i8042

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmstate"
)

// stateVersion is the version of the controller's saved state:
//
//	u32 version
//	u8  status (without output-buffer-full, which follows the queue),
//	    command byte, output port (bit 1: A20), pending command (0, 0x60
//	    or 0xd1: the command waiting for its data byte)
//	output buffer queue (u32 length, at most 16, then the bytes in order)
//
// The controller has no interrupt line (no keyboard or mouse to raise
// IRQ 1 or 12), so there is no level to restore.
const stateVersion = 1

// statusBits are the status bits stored (the rest are computed or never set).
const statusBits = stsSystem | stsCmd | stsUnlock

var _ vmstate.Stater = (*Controller)(nil)

// Reset puts the controller in its power-on state (machine reset), as New
// leaves it: the output queue empty and no command pending. It does not
// call the reset callback.
func (c *Controller) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.powerOn()
}

// SaveState implements vmstate.Stater.
func (c *Controller) SaveState(e *vmstate.Enc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.U32(stateVersion)
	e.U8(c.status)
	e.U8(c.cmdByte)
	e.U8(c.outPort)
	e.U8(c.pending)
	e.Bytes(c.out)
}

// LoadState implements vmstate.Stater. A status bit the controller does
// not store or a pending command that takes no data byte is refused, and
// nothing changes then. Loading never pulses the reset line, whatever the
// output port's bit 0 says.
func (c *Controller) LoadState(d *vmstate.Dec) error {
	d.Version(stateVersion)
	status, cmdByte, outPort, pending := d.U8(), d.U8(), d.U8(), d.U8()
	out := d.Bytes(outQueueLen)
	if err := d.Finish(); err != nil {
		return err
	}
	if status&^statusBits != 0 {
		return fmt.Errorf("%w: i8042: status %#x has bits the controller does not store", vmstate.ErrCorrupt, status)
	}
	if pending != 0 && pending != cmdWriteCommandByte && pending != cmdWriteOutputPort {
		return fmt.Errorf("%w: i8042: pending command %#x takes no data byte", vmstate.ErrCorrupt, pending)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status, c.cmdByte, c.outPort, c.pending = status, cmdByte, outPort, pending
	c.out = append(c.out[:0], out...)
	return nil
}
