// Package serial is an 8250/16550A UART (the PC's COM1), modelled on
// QEMU's serial.c: transmit is instantaneous (THR is always empty again by
// the next register read), receive has a 16-byte FIFO fed from the host,
// and the interrupt line follows IIR priority (line status > received data
// > transmitter empty > modem status).
package serial

import (
	"io"
	"sync"
	"sync/atomic"
)

// Register offsets from the base port.
const (
	regData = 0 // RBR (read) / THR (write); DLL with DLAB
	regIER  = 1 // interrupt enable; DLM with DLAB
	regIIR  = 2 // interrupt identification (read) / FCR (write)
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// IER bits.
const (
	ierRDA  = 0x01 // received data available
	ierTHRE = 0x02 // transmitter holding register empty
	ierRLS  = 0x04 // receiver line status
	ierMS   = 0x08 // modem status
)

// IIR values (interrupt sources, highest priority first) and FIFO bits.
const (
	iirNone     = 0x01
	iirRLS      = 0x06
	iirRDA      = 0x04
	iirTimeout  = 0x0c
	iirTHRE     = 0x02
	iirMS       = 0x00
	iirFIFOBits = 0xc0
)

// LSR bits.
const (
	lsrDR   = 0x01 // data ready
	lsrOE   = 0x02 // overrun
	lsrBI   = 0x10 // break
	lsrTHRE = 0x20
	lsrTEMT = 0x40
)

const (
	lcrDLAB    = 0x80
	mcrLoop    = 0x10
	fcrEnable  = 0x01
	fcrClearRx = 0x02
	fifoSize   = 16
)

// IRQLine is the interrupt output (pci.IRQLine).
type IRQLine interface{ SetLevel(asserted bool) }

// UART is one 16550A. It is a vmm.BusDevice at Ports ports; register
// offsets and bits follow the National Semiconductor PC16550D datasheet.
// Only byte accesses are architected: wider reads return 0xff, wider writes
// are ignored.
type UART struct {
	// mu guards every register and the receive FIFO. It is held while
	// calling irq.SetLevel, so level changes reach the line in the order
	// they were decided; the IRQ line must not call back into the UART.
	mu  sync.Mutex
	out io.Writer // transmitted bytes go here, one Write per byte; nil discards
	irq IRQLine   // nil: no interrupt line

	// The registers by their datasheet names: divisor latch low and high
	// (reached with LCR's DLAB set), interrupt enable, line control,
	// modem control, line status, modem status, scratch, and the FIFO
	// control last written (FCR itself is write-only; IIR shows its
	// FIFO-enable bits).
	dll, dlm uint8
	ier, lcr uint8
	mcr, lsr uint8
	msr, scr uint8
	fcr      uint8
	thrIPend bool // THR-empty interrupt pending (cleared by IIR read / THR write)
	// rx is the receive FIFO, oldest byte first, at most fifoSize bytes
	// whether or not the guest enabled FIFOs. Input stops short when it is
	// full (the host offers the rest again); pushRx records an overrun.
	rx []byte
	// irqLevel is the level last driven on irq, so that only changes are
	// passed on.
	irqLevel bool
	// Dropped counts input bytes lost to a full FIFO (overrun).
	Dropped atomic.Uint64
	// Errors counts failed writes to the output.
	Errors atomic.Uint64
}

// New returns a UART writing transmitted bytes to out (nil discards) and
// driving irq (nil: no interrupts).
func New(out io.Writer, irq IRQLine) *UART {
	u := &UART{out: out, irq: irq}
	u.reset()
	return u
}

// reset puts the registers in their power-on state (PC16550D table
// "UART Reset Configuration"), except the divisor, which is set to 9600
// baud as a BIOS would leave it.
func (u *UART) reset() {
	u.dll, u.dlm = 0x0c, 0 // 9600 baud
	u.ier, u.lcr, u.mcr, u.scr, u.fcr = 0, 0x03, 0x08, 0, 0
	u.lsr = lsrTHRE | lsrTEMT
	u.msr = 0xb0 // DCD, DSR, CTS asserted
	u.thrIPend = false
	u.rx = u.rx[:0]
}

// iir computes the interrupt identification from the current state: the
// highest-priority enabled source (IIR bits 3-1), bit 0 clear when one is
// pending, and bits 7-6 set while the FIFOs are enabled.
func (u *UART) iir() uint8 {
	v := uint8(iirNone)
	switch {
	case u.ier&ierRLS != 0 && u.lsr&(lsrOE|lsrBI) != 0:
		v = iirRLS
	case u.ier&ierRDA != 0 && u.lsr&lsrDR != 0:
		v = iirRDA
	case u.ier&ierTHRE != 0 && u.thrIPend:
		v = iirTHRE
	case u.ier&ierMS != 0 && u.msr&0x0f != 0:
		v = iirMS
	}
	if u.fcr&fcrEnable != 0 {
		v |= iirFIFOBits
	}
	return v
}

// level is what the interrupt line should be: an interrupt pending in
// IIR, gated by OUT2 (MCR bit 3) as on a PC.
func (u *UART) level() bool { return u.iir()&iirNone == 0 && u.mcr&0x08 != 0 }

// updateIRQ drives the line to level when it changed.
func (u *UART) updateIRQ() {
	level := u.level()
	if u.irq != nil && level != u.irqLevel {
		u.irq.SetLevel(level)
	}
	u.irqLevel = level
}

// Read implements vmm.BusDevice.
func (u *UART) Read(base, offset uint64, data []byte) {
	if len(data) != 1 {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	data[0] = u.readReg(offset)
	u.updateIRQ()
}

// readReg returns register off (DLAB selects the divisor latch at 0 and
// 1) with its read side effects: RBR pops the FIFO, IIR acknowledges a
// THR-empty interrupt, LSR clears the error bits, MSR its delta bits.
func (u *UART) readReg(off uint64) uint8 {
	switch off {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			return u.dll
		}
		if len(u.rx) == 0 {
			return 0
		}
		b := u.rx[0]
		u.rx = u.rx[:copy(u.rx, u.rx[1:])]
		if len(u.rx) == 0 {
			u.lsr &^= lsrDR
		}
		return b
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			return u.dlm
		}
		return u.ier
	case regIIR:
		v := u.iir()
		if v&0x0f == iirTHRE {
			u.thrIPend = false
		}
		return v
	case regLCR:
		return u.lcr
	case regMCR:
		return u.mcr
	case regLSR:
		v := u.lsr
		u.lsr &^= lsrOE | lsrBI
		return v
	case regMSR:
		if u.mcr&mcrLoop != 0 {
			// Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
			m := u.mcr
			return (m&0x01)<<5 | (m&0x02)<<3 | (m&0x04)<<4 | (m&0x08)<<4
		}
		v := u.msr
		u.msr &^= 0x0f // delta bits clear on read
		return v
	case regSCR:
		return u.scr
	}
	return 0xff
}

// Write implements vmm.BusDevice.
func (u *UART) Write(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.writeReg(offset, data[0])
	u.updateIRQ()
}

// writeReg stores v into register off (DLAB selects the divisor latch at
// 0 and 1); a THR write transmits at once, or loops back into the FIFO in
// loopback mode.
func (u *UART) writeReg(off uint64, v uint8) {
	switch off {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			u.dll = v
			return
		}
		if u.mcr&mcrLoop != 0 {
			u.pushRx(v)
		} else if u.out != nil {
			if _, err := u.out.Write([]byte{v}); err != nil {
				u.Errors.Add(1)
			}
		}
		// Transmission is instantaneous: THR is empty again at once.
		u.thrIPend = true
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			u.dlm = v
			return
		}
		old := u.ier
		u.ier = v & 0x0f
		// Enabling THRE interrupts with an empty THR raises one (16550 behaviour).
		if old&ierTHRE == 0 && u.ier&ierTHRE != 0 {
			u.thrIPend = true
		}
	case regIIR: // FCR
		if v&fcrClearRx != 0 {
			u.rx = u.rx[:0]
			u.lsr &^= lsrDR
		}
		// Keep FIFO enable (bit 0), DMA mode (bit 3) and the trigger
		// level (bits 7-6); the reset bits 1-2 are self-clearing.
		u.fcr = v & 0xc9
	case regLCR:
		u.lcr = v
	case regMCR:
		u.mcr = v & 0x1f
	case regLSR, regMSR:
		// Read-only on a 16550; writes are ignored.
	case regSCR:
		u.scr = v
	}
}

// pushRx queues one received byte, or records an overrun (LSR OE, Dropped)
// when the FIFO is full.
func (u *UART) pushRx(b byte) {
	if len(u.rx) >= fifoSize {
		u.lsr |= lsrOE
		u.Dropped.Add(1)
		return
	}
	u.rx = append(u.rx, b)
	u.lsr |= lsrDR
}

// Input queues host bytes as received data; it returns how many fitted in
// the FIFO (the rest must be offered again later: see Feed).
func (u *UART) Input(p []byte) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, b := range p {
		if len(u.rx) >= fifoSize {
			break
		}
		u.rx = append(u.rx, b)
		n++
	}
	if n > 0 {
		u.lsr |= lsrDR
		u.updateIRQ()
	}
	return n
}
