package devmgr

import "sort"

// SlotInfo describes one occupied slot.
type SlotInfo struct {
	Slot int
	// ID is the qdev id and Driver the -device driver; both may be "" (an
	// unnamed device, a device added with AddPCIDevice).
	ID, Driver string
	Node       string // the block node it uses ("" = none)
}

// Slots lists the occupied slots in slot order (devices being ejected
// included: they still hold their slot).
func (m *Manager) Slots() []SlotInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SlotInfo, 0, len(m.slots))
	for n, e := range m.slots {
		out = append(out, SlotInfo{Slot: n, ID: e.id, Driver: e.driver, Node: e.node})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Slot < out[j].Slot })
	return out
}

// Quiesce waits for every eject in flight and then for every device's
// in-flight I/O (pci.Bus.Quiesce); the vCPUs must be paused, so no new
// request arrives. Devices stay quiet until Unquiesce.
func (m *Manager) Quiesce() {
	m.ejects.Wait()
	m.p.Bus.Quiesce()
}

// Unquiesce lets the devices serve requests again.
func (m *Manager) Unquiesce() { m.p.Bus.Resume() }
