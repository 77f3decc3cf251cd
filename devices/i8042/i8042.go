// Package i8042 is the PC keyboard controller as far as an OS needs it
// without a keyboard: status and command byte, self tests, the output
// port, and the CPU reset line (command 0xFE on port 0x64, or output-port
// bit 0 cleared with command 0xD1), which resets the VM.
package i8042

import "sync"

// The controller's ports (IBM PC/AT assignment), relative to the device
// inserted at DataPort with size Ports (0x60..0x64), and the keyboard's ISA
// IRQ. ResetCommand written to CommandPort pulses the CPU reset line: the
// FADT's RESET_REG and RESET_VALUE (machine/pc passes these to firmware/acpi).
const (
	DataPort     = 0x60
	CommandPort  = 0x64
	Ports        = CommandPort - DataPort + 1
	IRQ          = 1
	ResetCommand = cmdPulseReset

	offData    = 0
	offCommand = 4
)

// Status register bits.
const (
	stsOutFull = 0x01
	stsSystem  = 0x04 // passed self test
	stsCmd     = 0x08 // last write was a command
	stsUnlock  = 0x10 // keyboard not inhibited
)

// Controller commands.
const (
	cmdReadCommandByte  = 0x20
	cmdWriteCommandByte = 0x60
	cmdDisableAux       = 0xa7
	cmdEnableAux        = 0xa8
	cmdTestAux          = 0xa9
	cmdSelfTest         = 0xaa
	cmdTestKbd          = 0xab
	cmdDisableKbd       = 0xad
	cmdEnableKbd        = 0xae
	cmdReadOutputPort   = 0xd0
	cmdWriteOutputPort  = 0xd1
	cmdPulseReset       = 0xfe
)

// outQueueLen bounds the output buffer queue.
const outQueueLen = 16

// Controller is the i8042. It is a vmm.BusDevice at DataPort, size Ports.
type Controller struct {
	// mu guards the registers and the output queue. The reset callback
	// runs after mu is released (Write), so it may reset or rebuild the
	// machine, this controller included.
	mu      sync.Mutex
	status  uint8
	cmdByte uint8
	outPort uint8
	out     []uint8 // output buffer queue
	pending uint8   // command awaiting a data byte, 0 if none
	reset   func()
}

// New returns a controller calling reset when the guest pulses the reset line.
// The power-on state: status says the self test passed and the keyboard
// is not inhibited; command byte 0x61 (keyboard interrupt on, auxiliary
// port disabled, scan-code translation); output port 0x03 (bit 0: reset
// line not asserted, bit 1: A20 enabled).
func New(reset func()) *Controller {
	c := &Controller{reset: reset}
	c.powerOn()
	return c
}

// powerOn sets the registers New documents, with nothing queued or pending.
func (c *Controller) powerOn() {
	c.status, c.cmdByte, c.outPort = stsSystem|stsUnlock, 0x61, 0x03
	c.out = c.out[:0]
	c.pending = 0
}

// push queues a byte for the guest to read at the data port; the queue is
// bounded at 16 bytes (a guest that never reads cannot grow it) and bytes
// beyond are dropped.
func (c *Controller) push(b uint8) {
	if len(c.out) < outQueueLen {
		c.out = append(c.out, b)
	}
}

// Read implements vmm.BusDevice.
func (c *Controller) Read(base, offset uint64, data []byte) {
	if len(data) != 1 {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch offset {
	case offCommand:
		s := c.status
		if len(c.out) > 0 {
			s |= stsOutFull
		}
		data[0] = s
	case offData:
		if len(c.out) == 0 {
			data[0] = 0
			return
		}
		data[0] = c.out[0]
		c.out = c.out[:copy(c.out, c.out[1:])]
	default:
		data[0] = 0xff
	}
}

// Write implements vmm.BusDevice.
func (c *Controller) Write(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	var fire func()
	c.mu.Lock()
	switch offset {
	case offCommand:
		c.status |= stsCmd
		fire = c.command(data[0])
	case offData:
		c.status &^= stsCmd
		fire = c.data(data[0])
	}
	c.mu.Unlock()
	if fire != nil {
		fire()
	}
}

// command runs controller command b (written to CommandPort). Commands that
// take an argument (0x60 write command byte, 0xd1 write output port) wait
// for it in pending. It returns the reset callback when b pulses the CPU
// reset line, for Write to call unlocked.
func (c *Controller) command(b uint8) func() {
	c.pending = 0
	switch b {
	case cmdReadCommandByte:
		c.push(c.cmdByte)
	case cmdWriteCommandByte, cmdWriteOutputPort:
		c.pending = b
	case cmdSelfTest:
		c.push(0x55) // self test passed
	case cmdTestKbd, cmdTestAux:
		c.push(0x00) // interface test: no error
	case cmdDisableKbd:
		c.cmdByte |= 0x10
	case cmdEnableKbd:
		c.cmdByte &^= 0x10
	case cmdDisableAux:
		c.cmdByte |= 0x20
	case cmdEnableAux:
		c.cmdByte &^= 0x20
	case cmdReadOutputPort:
		c.push(c.outPort)
	case cmdPulseReset:
		return c.reset
	default:
		// 0xf0-0xff pulse output lines; bit 0 low pulses reset.
		if b >= 0xf0 && b&1 == 0 {
			return c.reset
		}
	}
	return nil
}

// data takes a byte written to DataPort: the argument of a pending
// command, or else a byte for the keyboard. Like command, it returns the
// reset callback when the byte drives the reset line low.
func (c *Controller) data(b uint8) func() {
	switch c.pending {
	case cmdWriteCommandByte:
		c.pending = 0
		c.cmdByte = b
		return nil
	case cmdWriteOutputPort:
		c.pending = 0
		c.outPort = b
		if b&1 == 0 {
			return c.reset
		}
		return nil
	}
	// A byte for the (absent) keyboard: acknowledge resets and other
	// commands so a driver probing it moves on.
	c.push(0xfa) // ACK
	if b == 0xff {
		c.push(0xaa) // reset: basic assurance test passed
	}
	return nil
}
