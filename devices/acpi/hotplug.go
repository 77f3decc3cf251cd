package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrSlotNotHotpluggable is returned by Plug and Unplug for a slot outside the
// controller's hot-pluggable mask (slot 0, the host bridge, never is).
var ErrSlotNotHotpluggable = errors.New("pci slot is not hot-pluggable")

// Hotplug is the PCI hotplug controller for bus 0 at HotplugBase, as QEMU's
// PIIX4 ("legacy") acpi-pcihp:
//
//	+0x0 up:        read-only, bit per slot with a pending insertion
//	+0x4 down:      read-only, bit per slot with a pending removal request
//	+0x8 eject:     write: bit per slot to eject; read: feature set, 0
//	+0xc removable: read-only, bit per hot-pluggable slot
//
// Only aligned 4-byte accesses are architected; others read as all-ones and
// are ignored on write, counted in BadAccesses.
//
// When the bits clear: as QEMU's PIIX4 mode (legacy_piix in hw/acpi/pcihp.c),
// reading up or down does not clear them. Both bits of a slot clear when the
// guest ejects it (writes its bit to the eject register), which is how the
// OS reports that a removal completed; an insertion bit therefore stays set
// until that slot is later ejected, and each GPE.1 re-notifies it (a bus
// check of an already-enumerated slot is harmless).
type Hotplug struct {
	// mu guards up and down. Lock order: Hotplug.mu before GPE.mu; the
	// eject callback runs with no lock held.
	mu       sync.Mutex
	up, down uint32

	removable uint32 // fixed at construction
	gpe       *GPE
	onEject   func(slot int)

	// BadAccesses counts ignored accesses (odd widths or offsets, writes to
	// read-only registers, eject bits for slots that are not hot-pluggable).
	BadAccesses atomic.Uint64
}

// NewHotplug returns the controller for the hot-pluggable slots in mask
// (bit n = slot n; bit 0 is refused). It raises GPEPCIHotplug on gpe, and
// calls onEject(slot) from the vCPU thread when the guest ejects a slot:
// machine/pc then removes the device from the bus, releases it and emits
// DEVICE_DELETED; it may be called for an empty slot (the guest ejects
// what it likes) and then has nothing to do. onEject must not call back into the controller's Read or
// Write; calling Plug and Unplug is allowed.
func NewHotplug(gpe *GPE, mask uint32, onEject func(slot int)) (*Hotplug, error) {
	if gpe == nil {
		return nil, errors.New("pci hotplug: nil GPE block")
	}
	if mask&1 != 0 {
		return nil, fmt.Errorf("pci hotplug: slot 0 (host bridge) cannot be hot-pluggable: %w", ErrSlotNotHotpluggable)
	}
	return &Hotplug{removable: mask, gpe: gpe, onEject: onEject}, nil
}

// Removable returns the hot-pluggable slot mask (the removable register).
func (h *Hotplug) Removable() uint32 { return h.removable }

// Pending returns the up and down registers.
func (h *Hotplug) Pending() (up, down uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.up, h.down
}

func (h *Hotplug) check(slot int) error {
	if slot < 0 || slot >= HotplugSlots || h.removable&(1<<uint(slot)) == 0 {
		return fmt.Errorf("pci slot %d: %w", slot, ErrSlotNotHotpluggable)
	}
	return nil
}

// Plug tells the guest a device was inserted in slot (the caller has already
// added it to the PCI bus): it sets the slot's up bit and raises GPE.1.
func (h *Hotplug) Plug(slot int) error {
	if err := h.check(slot); err != nil {
		return err
	}
	h.mu.Lock()
	h.up |= 1 << uint(slot)
	h.gpe.Raise(GPEPCIHotplug)
	h.mu.Unlock()
	return nil
}

// Unplug asks the guest to release slot: it sets the slot's down bit and
// raises GPE.1. It is a request only; the device goes away when the guest
// ejects the slot (onEject).
func (h *Hotplug) Unplug(slot int) error {
	if err := h.check(slot); err != nil {
		return err
	}
	h.mu.Lock()
	h.down |= 1 << uint(slot)
	h.gpe.Raise(GPEPCIHotplug)
	h.mu.Unlock()
	return nil
}

// Reset clears the pending insertions and removal requests, for a machine
// reset that keeps its devices: the next OS enumerates what is present, and
// a removal the old OS never completed must be requested again (as a
// device_del that did not finish before a reboot in QEMU).
func (h *Hotplug) Reset() {
	h.mu.Lock()
	h.up, h.down = 0, 0
	h.mu.Unlock()
}

// Read implements vmm.BusDevice.
func (h *Hotplug) Read(base, offset uint64, data []byte) {
	if len(data) != 4 || offset%4 != 0 || offset >= HotplugLen {
		h.BadAccesses.Add(1)
		fill(data, 0xff)
		return
	}
	var v uint32
	switch offset {
	case HotplugUpOffset:
		h.mu.Lock()
		v = h.up
		h.mu.Unlock()
	case HotplugDownOffset:
		h.mu.Lock()
		v = h.down
		h.mu.Unlock()
	case HotplugEjectOffset:
		v = 0 // base feature set: no feature bits
	case HotplugRemovableOffset:
		v = h.removable
	}
	binary.LittleEndian.PutUint32(data, v)
}

// Write implements vmm.BusDevice. Only the eject register is writable.
func (h *Hotplug) Write(base, offset uint64, data []byte) {
	if len(data) != 4 || offset != HotplugEjectOffset {
		h.BadAccesses.Add(1)
		return
	}
	bits := binary.LittleEndian.Uint32(data)
	if bits&^h.removable != 0 {
		h.BadAccesses.Add(1) // ejecting a fixed slot: ignored, as QEMU
		bits &= h.removable
	}
	if bits == 0 {
		return
	}
	h.mu.Lock()
	h.up &^= bits
	h.down &^= bits
	h.mu.Unlock()
	if h.onEject == nil {
		return
	}
	for slot := 0; slot < HotplugSlots; slot++ {
		if bits&(1<<uint(slot)) != 0 {
			h.onEject(slot)
		}
	}
}
