package serial

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmstate"
)

// stateVersion is the version of the UART's saved state:
//
//	u32 version
//	u8  DLL, DLM, IER, LCR, MCR, LSR, MSR, SCR, FCR
//	u8  THR-empty interrupt pending (bool)
//	receive FIFO (u32 length, at most 16, then the bytes, oldest first)
//
// IIR is not stored: it is computed from these (iir).
const stateVersion = 1

// lsrBits are the LSR bits the model ever holds.
const lsrBits = lsrDR | lsrOE | lsrBI | lsrTHRE | lsrTEMT

var _ vmstate.Stater = (*UART)(nil)

// Reset puts the UART in its power-on state (machine reset): the
// registers as New leaves them, the receive FIFO empty, the line low.
func (u *UART) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reset()
	u.updateIRQ()
}

// SaveState implements vmstate.Stater.
func (u *UART) SaveState(e *vmstate.Enc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e.U32(stateVersion)
	for _, r := range []uint8{u.dll, u.dlm, u.ier, u.lcr, u.mcr, u.lsr, u.msr, u.scr, u.fcr} {
		e.U8(r)
	}
	e.Bool(u.thrIPend)
	e.Bytes(u.rx)
}

// LoadState implements vmstate.Stater. It refuses register values the
// UART could not hold (bits its writes mask off, more than 16 bytes in the
// FIFO, LSR.DR disagreeing with the FIFO) and changes nothing then. It does
// not drive the interrupt line: SyncIRQ does, once the irqchip is loaded.
func (u *UART) LoadState(d *vmstate.Dec) error {
	d.Version(stateVersion)
	var r [9]uint8
	for i := range r {
		r[i] = d.U8()
	}
	thrIPend := d.Bool()
	rx := d.Bytes(fifoSize)
	if err := d.Finish(); err != nil {
		return err
	}
	dll, dlm, ier, lcr, mcr, lsr, msr, scr, fcr := r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
	switch {
	case ier&^0x0f != 0:
		return fmt.Errorf("%w: serial: IER %#x has reserved bits set", vmstate.ErrCorrupt, ier)
	case mcr&^0x1f != 0:
		return fmt.Errorf("%w: serial: MCR %#x has reserved bits set", vmstate.ErrCorrupt, mcr)
	case fcr&^0xc9 != 0:
		return fmt.Errorf("%w: serial: FCR %#x has self-clearing or reserved bits set", vmstate.ErrCorrupt, fcr)
	case lsr&^lsrBits != 0 || lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT:
		return fmt.Errorf("%w: serial: LSR %#x is not a state of this UART", vmstate.ErrCorrupt, lsr)
	case (lsr&lsrDR != 0) != (len(rx) > 0):
		return fmt.Errorf("%w: serial: LSR data ready %v with %d bytes in the FIFO", vmstate.ErrCorrupt, lsr&lsrDR != 0, len(rx))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.dll, u.dlm, u.ier, u.lcr, u.mcr, u.lsr, u.msr, u.scr, u.fcr = dll, dlm, ier, lcr, mcr, lsr, msr, scr, fcr
	u.thrIPend = thrIPend
	u.rx = append(u.rx[:0], rx...)
	u.irqLevel = u.level()
	return nil
}

// SyncIRQ drives the interrupt line to the level the registers imply,
// whether or not it changed. The machine calls it after LoadState and
// after the in-kernel irqchip has been loaded (KVM_SET_IRQCHIP), so the
// irqchip's view of the line is the UART's.
func (u *UART) SyncIRQ() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.irqLevel = u.level()
	if u.irq != nil {
		u.irq.SetLevel(u.irqLevel)
	}
}
