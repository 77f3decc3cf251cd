package ivshmem

import (
	"encoding/binary"
	"time"

	"github.com/petrel-vmm/petrel/devices/pci"
)

// Read implements vmm.BusDevice for BAR0. Only aligned 32-bit accesses to
// the four registers are answered (QEMU's access size is 4); anything else
// reads 0, as QEMU's unknown offsets do, and is counted.
func (d *Device) Read(_, off uint64, data []byte) {
	clear(data)
	if len(data) != 4 || off%4 != 0 || off > RegDoorbell {
		d.BadAccesses.Add(1)
		return
	}
	var v uint32
	d.mu.Lock()
	switch off {
	case RegIntrMask:
		v = d.intrMask
	case RegIntrStatus:
		// Reading the status clears it (QEMU: "reading ISR clears all
		// interrupts") and so drops the pin.
		v = d.intrStatus
		d.intrStatus = 0
		d.updateIRQLocked()
	case RegIVPosition:
		v = uint32(d.id)
	case RegDoorbell:
		// Write-only; reads 0.
	}
	d.mu.Unlock()
	binary.LittleEndian.PutUint32(data, v)
}

// Write implements vmm.BusDevice for BAR0.
func (d *Device) Write(_, off uint64, data []byte) {
	if len(data) != 4 || off%4 != 0 || off > RegDoorbell {
		d.BadAccesses.Add(1)
		return
	}
	v := binary.LittleEndian.Uint32(data)
	switch off {
	case RegIntrMask:
		d.mu.Lock()
		d.intrMask = v
		d.updateIRQLocked()
		d.mu.Unlock()
	case RegIntrStatus:
		// QEMU lets the guest set the status too (a self-interrupt).
		d.mu.Lock()
		d.intrStatus = v
		d.updateIRQLocked()
		d.mu.Unlock()
	case RegIVPosition:
		d.BadAccesses.Add(1) // read-only
	case RegDoorbell:
		d.ring(int(v>>16), int(v&0xffff))
	}
}

// ringRetryMax bounds, in milliseconds, how long a doorbell to a peer not
// yet known waits for pending server messages.
const ringRetryMax = 200

// ring signals peer's eventfd for vector; it reaches here only when no
// ioeventfd took the write in the kernel.
func (d *Device) ring(peer, vector int) {
	d.VMMDoorbells.Add(1)
	if d.client == nil {
		d.DroppedDoorbells.Add(1) // ivshmem-plain has no peers
		return
	}
	err := d.client.Ring(peer, vector)
	// A peer that joined a moment ago may be known to the guest (through
	// shared memory) before this VMM has applied the server's message
	// announcing it. While such messages are waiting, give them a little
	// time rather than drop the doorbell; a doorbell to a peer that really
	// is absent (nothing pending) is dropped at once.
	for wait := 0; err != nil && wait < ringRetryMax && d.client.Pending(); wait++ {
		time.Sleep(time.Millisecond)
		err = d.client.Ring(peer, vector)
	}
	if err != nil {
		d.DroppedDoorbells.Add(1)
	}
}

// raiseStatus is the pin-interrupt path of an own-vector event.
func (d *Device) raiseStatus() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.intrStatus = 1
	d.updateIRQLocked()
}

// intxLevelLocked is what INTA# should be: status & mask, unless the guest
// set INTx Disable in the command register. It also shows the pending
// interrupt in the config status register.
func (d *Device) intxLevelLocked() bool {
	pending := d.intrStatus&d.intrMask != 0
	d.cfg.SetINTxStatus(pending)
	return pending && d.cfg.Command()&pci.CmdINTxDisable == 0 && !d.released
}

// updateIRQLocked drives INTA# to intxLevelLocked when it changed.
func (d *Device) updateIRQLocked() {
	level := d.intxLevelLocked()
	if level == d.irqLevel {
		return
	}
	d.irqLevel = level
	if d.irq != nil {
		d.irq.SetLevel(level)
	}
}

// commandHook re-evaluates INTA# when the guest toggles INTx Disable.
type commandHook struct{ d *Device }

func (commandHook) ConfigRead(int, []byte) {}

func (h commandHook) ConfigWrite(int, []byte) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	h.d.updateIRQLocked()
}
