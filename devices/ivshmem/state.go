package ivshmem

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmstate"
)

// stateVersion is the version of the device's saved state:
//
//	u32 version
//	u32 MSI-X vectors (0: ivshmem-plain) and u64 shared memory size: the
//	    configuration, checked on load
//	u32 IntrMask, u32 IntrStatus
//	bytes: the MSI-X table and PBA (pci.MSIX's own state; empty for
//	    ivshmem-plain)
//
// Not in it: the shared memory (external: a memory backend or the
// server's), IVPosition (a doorbell device keeps the ID its own server
// connection was given, as QEMU reconnects and takes a new one), and the
// config space, which the PCI bus saves (and loads first: MSI-X reads its
// enable bit from it).
const stateVersion = 1

var _ vmstate.Stater = (*Device)(nil)

func (d *Device) vectors() uint32 {
	if d.msix == nil {
		return 0
	}
	return uint32(d.msix.Vectors())
}

// SaveState implements vmstate.Stater.
func (d *Device) SaveState(e *vmstate.Enc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.U32(stateVersion)
	e.U32(d.vectors())
	e.U64(uint64(len(d.mem)))
	e.U32(d.intrMask)
	e.U32(d.intrStatus)
	var m vmstate.Enc
	if d.msix != nil {
		d.msix.SaveState(&m) // lock order: mu, then MSIX.mu
	}
	e.Bytes(m.Data())
}

// LoadState implements vmstate.Stater. A state saved from a device of
// another kind, vector count or memory size is refused and nothing
// changes then. It does not drive INTA#: SyncIRQ does, after the PCI bus
// state and the irqchip are loaded.
func (d *Device) LoadState(dec *vmstate.Dec) error {
	dec.Version(stateVersion)
	vectors, size := dec.U32(), dec.U64()
	mask, status := dec.U32(), dec.U32()
	msix := dec.Bytes(1 << 20)
	if err := dec.Finish(); err != nil {
		return err
	}
	if vectors != d.vectors() {
		return fmt.Errorf("ivshmem: saved from a device with %d MSI-X vectors (0: ivshmem-plain), this one has %d", vectors, d.vectors())
	}
	if size != uint64(len(d.mem)) {
		return fmt.Errorf("ivshmem: saved with %d bytes of shared memory, this device has %d", size, len(d.mem))
	}
	if (d.msix == nil) != (len(msix) == 0) {
		return fmt.Errorf("%w: ivshmem: MSI-X state present: %v, device has MSI-X: %v", vmstate.ErrCorrupt, len(msix) > 0, d.msix != nil)
	}
	if d.msix != nil {
		if err := d.msix.LoadState(vmstate.NewDec("ivshmem MSI-X", msix)); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.intrMask, d.intrStatus = mask, status
	return nil
}

// SyncIRQ brings the interrupt paths in line with the loaded state, in
// that order after LoadState, the PCI bus's load (config space and MSI-X)
// and the irqchip's: own vectors go to MSI-X irqfds or to the poller as
// the loaded MSI-X enable bit says (the bus restores it without the
// config write that would have moved them), and INTA# is driven to the
// level status, mask and the command register's INTx Disable imply,
// whether or not it changed.
func (d *Device) SyncIRQ() {
	if d.msix != nil {
		d.followMSIXEnable()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.irqLevel = d.intxLevelLocked()
	if d.irq != nil {
		d.irq.SetLevel(d.irqLevel)
	}
}
