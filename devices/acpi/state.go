package acpi

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmstate"
)

// gpeStateVersion is the version of the GPE block's saved state:
//
//	u32 version
//	u16 status, u16 enable
//
// The SCI level is not stored: it is status & enable != 0.
const gpeStateVersion = 1

// hotplugStateVersion is the version of the hotplug controller's saved
// state:
//
//	u32 version
//	u32 removable (the hot-pluggable slots: configuration, checked on load)
//	u32 up, u32 down (pending insertions and removal requests)
//
// The PIIX4 interface has no slot selector or other guest-written state
// (eject is a write-only action, the feature register reads 0).
const hotplugStateVersion = 1

var (
	_ vmstate.Stater = (*GPE)(nil)
	_ vmstate.Stater = (*Hotplug)(nil)
)

// SaveState implements vmstate.Stater.
func (g *GPE) SaveState(e *vmstate.Enc) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e.U32(gpeStateVersion)
	e.U16(g.sts)
	e.U16(g.en)
}

// LoadState implements vmstate.Stater. It does not drive the SCI:
// SyncIRQ does, once the irqchip is loaded.
func (g *GPE) LoadState(d *vmstate.Dec) error {
	d.Version(gpeStateVersion)
	sts, en := d.U16(), d.U16()
	if err := d.Finish(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sts, g.en = sts, en
	g.asserted = sts&en != 0
	return nil
}

// SyncIRQ drives the SCI to the level the registers imply, whether or not
// it changed. The machine calls it after LoadState and after the in-kernel
// irqchip has been loaded, so the irqchip's view of the line is the block's.
func (g *GPE) SyncIRQ() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asserted = g.sts&g.en != 0
	if g.sci != nil {
		g.sci.SetLevel(g.asserted)
	}
}

// SaveState implements vmstate.Stater.
func (h *Hotplug) SaveState(e *vmstate.Enc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e.U32(hotplugStateVersion)
	e.U32(h.removable)
	e.U32(h.up)
	e.U32(h.down)
}

// LoadState implements vmstate.Stater. A state saved with other
// hot-pluggable slots is refused (a different machine), as is a pending
// bit on a slot that is not hot-pluggable; nothing changes then. The GPE
// bit that announced the pending requests is the GPE block's own state.
func (h *Hotplug) LoadState(d *vmstate.Dec) error {
	d.Version(hotplugStateVersion)
	removable, up, down := d.U32(), d.U32(), d.U32()
	if err := d.Finish(); err != nil {
		return err
	}
	if removable != h.removable {
		return fmt.Errorf("pci hotplug: the saved machine's hot-pluggable slots are %#x, this one's %#x", removable, h.removable)
	}
	if (up|down)&^removable != 0 {
		return fmt.Errorf("%w: pci hotplug: pending up %#x down %#x outside the hot-pluggable slots %#x", vmstate.ErrCorrupt, up, down, removable)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.up, h.down = up, down
	return nil
}
