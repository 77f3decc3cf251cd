package pci

import (
	"errors"
	"fmt"

	"github.com/petrel-vmm/petrel/vmstate"
)

// ErrStateMismatch is wrapped by the errors of a LoadState whose saved
// state is well formed but belongs to another machine configuration (a
// different device in a slot, another BAR layout or vector count).
var ErrStateMismatch = errors.New("saved state does not match this machine")

// Quiescer is implemented by devices that work on goroutines of their own
// (virtio queues, a NIC's receive path). Quiesce returns once the device
// has completed every request it took from the guest, raised the
// interrupts for them, and no longer touches guest memory, its queues or
// its interrupts on its own; Resume lets it go on. The machine quiesces
// devices after pausing the vCPUs and before saving or loading state.
type Quiescer interface {
	Quiesce()
	Resume()
}

// Quiesce quiesces every device on the bus that implements Quiescer, in
// slot order. Devices are called without the bus lock held.
func (b *Bus) Quiesce() {
	for _, q := range b.quiescers() {
		q.Quiesce()
	}
}

// Resume resumes every device that implements Quiescer, in slot order.
func (b *Bus) Resume() {
	for _, q := range b.quiescers() {
		q.Resume()
	}
}

// quiescers snapshots the devices that implement Quiescer under mu;
// Quiesce and Resume then call them without it, so that waiting for a
// device's in-flight I/O never holds the bus lock.
func (b *Bus) quiescers() []Quiescer {
	b.mu.Lock()
	defer b.mu.Unlock()
	var qs []Quiescer
	for _, s := range b.slots {
		if s == nil {
			continue
		}
		if q, ok := s.dev.(Quiescer); ok {
			qs = append(qs, q)
		}
	}
	return qs
}

// busStateVersion is the version of the bus's section. Version 1:
//
//	u32 version, u32 CONFIG_ADDRESS latch, u8 slot count (NumSlots), then
//	per slot: bool occupied; if occupied: the ExtendedConfigSize config
//	bytes, then per BAR: u64 size (0: unused), u8 kind (barKind), u64
//	address Add assigned (restored by Reset).
const busStateVersion = 1

// SaveState implements vmstate.Stater: the CONFIG_ADDRESS latch and, for
// every occupied slot, its configuration space (command register, BAR
// addresses, MSI-X enable and function mask, everything the guest wrote)
// and the BAR addresses Reset returns to. A device's own state (its MSI-X
// table, queues) is in the device's section.
func (b *Bus) SaveState(e *vmstate.Enc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.U32(busStateVersion)
	e.U32(b.address)
	e.U8(NumSlots)
	for _, s := range b.slots {
		e.Bool(s != nil)
		if s == nil {
			continue
		}
		s.cfg.mu.Lock()
		e.Fixed(s.cfg.data[:])
		s.cfg.mu.Unlock()
		for i := range NumBARs {
			def := s.cfg.BARDef(i)
			e.U64(def.Size)
			e.U8(barKind(def))
			e.U64(s.assigned[i])
		}
	}
}

// barKind encodes what a BAR is besides its size: bit 0 I/O, bit 1
// 64-bit, bit 2 prefetchable, bit 3 guest RAM.
func barKind(def BAR) uint8 {
	var k uint8
	for i, f := range []bool{def.IO, def.Is64, def.Prefetch, def.RAM != nil} {
		if f {
			k |= 1 << i
		}
	}
	return k
}

// describeBAR names a BAR's kind and size for errors.
func describeBAR(size uint64, kind uint8) string {
	if size == 0 {
		return "unused"
	}
	s := "32-bit memory"
	switch {
	case kind&1 != 0:
		s = "I/O"
	case kind&2 != 0:
		s = "64-bit memory"
	}
	if kind&4 != 0 {
		s = "prefetchable " + s
	}
	if kind&8 != 0 {
		s += " (RAM)"
	}
	return fmt.Sprintf("%s of %#x bytes", s, size)
}

// savedSlot is one slot of a decoded bus section.
type savedSlot struct {
	data     [ExtendedConfigSize]byte // the whole configuration space
	size     [NumBARs]uint64          // each BAR's size, to match the live device's
	kind     [NumBARs]uint8           // each BAR's barKind bits: I/O, 64-bit, prefetchable, RAM
	assigned [NumBARs]uint64          // the address Add gave each BAR
}

// LoadState implements vmstate.Stater. The bus must hold the same devices
// in the same slots as the saved one (vendor and device ID, and every byte
// of configuration space the guest cannot write: capability layout, BAR
// types and sizes, MSI-X table size), else it fails naming the slot. It
// then unmaps every BAR, installs the saved configuration spaces and maps
// the BARs they decode through the Host exactly as guest writes would
// (BARObserver callbacks included, so virtio ioeventfds are registered).
// A malformed or mismatched section changes nothing.
//
// Devices load their own sections after this one: MSI-X state in
// particular (MSIX.LoadState) reads the enable and mask bits from the
// configuration space loaded here.
func (b *Bus) LoadState(d *vmstate.Dec) error {
	d.Version(busStateVersion)
	addr := d.U32()
	if n := d.U8(); d.Err() == nil && n != NumSlots {
		d.Failf("%d slots, this bus has %d", n, NumSlots)
	}
	var saved [NumSlots]*savedSlot // nil: empty in the saved machine
	for n := range saved {
		if !d.Bool() || d.Err() != nil {
			continue
		}
		s := &savedSlot{}
		saved[n] = s
		d.FixedInto(s.data[:])
		for i := range NumBARs {
			s.size[i] = d.U64()
			s.kind[i] = d.U8()
			s.assigned[i] = d.U64()
		}
	}
	if err := d.Finish(); err != nil {
		return err
	}
	if addr&^0x80ff_fffc != 0 {
		d.Failf("CONFIG_ADDRESS %#x has reserved bits set", addr)
		return d.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for n := range saved {
		if err := b.checkSlotLocked(n, saved[n]); err != nil {
			return err
		}
	}
	for n, s := range b.slots {
		if s != nil {
			b.unmapSlotLocked(n, s)
		}
	}
	b.address = addr
	for n, s := range b.slots {
		if s == nil {
			continue
		}
		s.cfg.mu.Lock()
		s.cfg.data = saved[n].data
		s.cfg.mu.Unlock()
		s.assigned = saved[n].assigned
	}
	for n, s := range b.slots {
		if s != nil {
			b.updateMappingsLocked(n, s)
		}
	}
	return nil
}

// checkSlotLocked reports how the saved slot n (nil: empty) differs from
// this bus's.
func (b *Bus) checkSlotLocked(n int, saved *savedSlot) error {
	s := b.slots[n]
	id := func(data []byte) string {
		return fmt.Sprintf("%02x%02x:%02x%02x", data[RegVendorID+1], data[RegVendorID], data[RegDeviceID+1], data[RegDeviceID])
	}
	switch {
	case s == nil && saved == nil:
		return nil
	case s == nil:
		return fmt.Errorf("PCI slot %d is empty, the saved state has device %s there: %w", n, id(saved.data[:]), ErrStateMismatch)
	case saved == nil:
		return fmt.Errorf("PCI slot %d holds a device, the saved state has none there: %w", n, ErrStateMismatch)
	}
	c := s.cfg
	c.mu.Lock()
	defer c.mu.Unlock()
	if here, there := id(c.data[:]), id(saved.data[:]); here != there {
		return fmt.Errorf("PCI slot %d holds device %s, the saved state has device %s: %w", n, here, there, ErrStateMismatch)
	}
	for i, def := range c.bars {
		if def.Size != saved.size[i] || barKind(def) != saved.kind[i] {
			return fmt.Errorf("PCI slot %d (%s) BAR %d is %s, %s in the saved state: %w", n, id(c.data[:]), i,
				describeBAR(def.Size, barKind(def)), describeBAR(saved.size[i], saved.kind[i]), ErrStateMismatch)
		}
	}
	for p := range c.data {
		// The guest changes only writable and write-1-to-clear bits; the
		// device itself only the interrupt status bit.
		mutable := c.wmask[p] | c.w1c[p]
		if p == RegStatus {
			mutable |= StatusINTx
		}
		if (c.data[p]^saved.data[p])&^mutable != 0 {
			return fmt.Errorf("PCI slot %d (%s): read-only config byte %#x is %#02x, %#02x in the saved state (built with another configuration): %w",
				n, id(c.data[:]), p, c.data[p], saved.data[p], ErrStateMismatch)
		}
	}
	for i := range NumBARs {
		if err := b.checkAssigned(c.bars[i], saved.assigned[i]); err != nil {
			return fmt.Errorf("PCI slot %d BAR %d: %w", n, i, err)
		}
	}
	return nil
}

// checkAssigned reports whether a is an address Add could have given BAR
// def from this bus's windows (0 for an unused BAR register).
func (b *Bus) checkAssigned(def BAR, a uint64) error {
	in := func(w Window) bool { return a >= w.Base && a+def.Size <= w.Base+w.Size && a+def.Size > a }
	switch {
	case def.Size == 0 && a == 0:
		return nil
	case def.Size == 0:
		return fmt.Errorf("%w: assigned %#x to an unused BAR", vmstate.ErrCorrupt, a)
	case a%def.Size != 0:
		return fmt.Errorf("%w: assigned address %#x not aligned to the BAR size %#x", vmstate.ErrCorrupt, a, def.Size)
	case def.IO && in(b.windows.IO), !def.IO && in(b.windows.Mem32), def.Is64 && in(b.windows.Mem64):
		return nil
	}
	return fmt.Errorf("assigned address %#x+%#x outside this machine's PCI windows: %w", a, def.Size, ErrStateMismatch)
}
