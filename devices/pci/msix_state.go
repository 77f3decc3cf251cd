package pci

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmstate"
)

// msixStateVersion is the version of MSI-X state. Version 1:
//
//	u32 version, u32 vectors, the table (16 bytes per vector: address,
//	data, vector control), the PBA as u64 words (vectors/64 rounded up).
//
// The enable and function mask bits are message control in configuration
// space, saved with the bus.
const msixStateVersion = 1

// SaveState implements vmstate.Stater for the device that owns the MSI-X
// capability, which writes it inside its own section. Signals waiting in
// a masked vector's eventfd become pending bits first, so the PBA saved is
// the one the guest would read.
func (m *MSIX) SaveState(e *vmstate.Enc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for v := range m.vec {
		m.drainLocked(v)
	}
	e.U32(msixStateVersion)
	e.U32(uint32(len(m.vec)))
	e.Fixed(m.table)
	for _, w := range m.pending {
		e.U64(w)
	}
}

// LoadState implements vmstate.Stater. It runs after the bus's LoadState
// (which restored message control in configuration space): it takes the
// enable and function mask bits from there, installs the table and the
// pending bits, and gives every deliverable vector its GSI route and irqfd
// again, as the guest's own writes would have. Signals left in eventfds
// from before the load are dropped. A malformed section changes nothing.
func (m *MSIX) LoadState(d *vmstate.Dec) error {
	d.Version(msixStateVersion)
	if n := d.U32(); d.Err() == nil && int(n) != len(m.vec) {
		return fmt.Errorf("MSI-X: %d vectors saved, this device has %d: %w", n, len(m.vec), ErrStateMismatch)
	}
	table := make([]byte, len(m.table))
	d.FixedInto(table)
	pending := make([]uint64, len(m.pending))
	for i := range pending {
		pending[i] = d.U64()
	}
	if err := d.Finish(); err != nil {
		return err
	}
	for v := range m.vec {
		// Only the mask bit of vector control is writable (see Write).
		if c := table[v*msixEntrySize+12 : (v+1)*msixEntrySize]; c[0]&^msixEntryMasked != 0 || c[1]|c[2]|c[3] != 0 {
			d.Failf("MSI-X vector %d control %#x has reserved bits set", v, c)
			return d.Err()
		}
	}
	if extra := len(m.vec) % 64; extra != 0 && pending[len(pending)-1]>>extra != 0 {
		d.Failf("MSI-X pending bits set beyond vector %d", len(m.vec)-1)
		return d.Err()
	}
	ctrl := m.cfg.Uint16(m.capOff + 2)
	m.mu.Lock()
	defer m.mu.Unlock()
	for v := range m.vec {
		if err := m.detachLocked(v); err != nil {
			m.Dropped.Add(1)
		}
		m.drainLocked(v)
	}
	copy(m.table, table)
	copy(m.pending, pending)
	m.enabled = ctrl&msixCtrlEnable != 0
	m.funcMask = ctrl&msixCtrlFuncMask != 0
	for v := range m.vec {
		m.syncLocked(v)
	}
	return nil
}
