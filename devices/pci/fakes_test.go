package pci

import (
	"fmt"
	"sync"
)

// recHost records MapBAR/UnmapBAR calls and refuses overlapping mappings, as
// machine/pc's vmm.Bus does.
type recHost struct {
	mu     sync.Mutex
	log    []string
	active map[uint64]Mapping
}

func newRecHost() *recHost { return &recHost{active: map[uint64]Mapping{}} }

func (h *recHost) MapBAR(m Mapping) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for a, o := range h.active {
		if o.IO == m.IO && a < m.Addr+m.Size && m.Addr < a+o.Size {
			return fmt.Errorf("overlap with %#x", a)
		}
	}
	h.active[m.Addr] = m
	h.log = append(h.log, fmt.Sprintf("map %d/%d %#x+%#x", m.Slot, m.BAR, m.Addr, m.Size))
	return nil
}

func (h *recHost) UnmapBAR(m Mapping) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.active[m.Addr]; !ok {
		return fmt.Errorf("nothing at %#x", m.Addr)
	}
	delete(h.active, m.Addr)
	h.log = append(h.log, fmt.Sprintf("unmap %d/%d %#x+%#x", m.Slot, m.BAR, m.Addr, m.Size))
	return nil
}

func (h *recHost) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.log
	h.log = nil
	return l
}

// recSignaler records KVM_SIGNAL_MSI calls.
type recSignaler struct {
	mu   sync.Mutex
	msis []string
}

func (s *recSignaler) SignalMSI(addr uint64, data uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msis = append(s.msis, fmt.Sprintf("%#x:%#x", addr, data))
	return nil
}

func (s *recSignaler) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.msis
	s.msis = nil
	return l
}

// nullDev is a BAR handler that reads zeroes and ignores writes.
type nullDev struct{}

func (nullDev) Read(_, _ uint64, d []byte) {
	for i := range d {
		d[i] = 0
	}
}
func (nullDev) Write(_, _ uint64, _ []byte) {}

type testDev struct{ cfg *ConfigSpace }

func (d *testDev) Config() *ConfigSpace { return d.cfg }

// testWindows are the x86 PC's windows (docs/ARCHITECTURE.md), spelled out
// here rather than taken from machine/pc, which imports this package.
var testWindows = Windows{
	IO:    Window{0xc000, 0x4000},
	Mem32: Window{0xc000_0000, 0xfc00_0000 - 0xc000_0000},
	Mem64: Window{0x100_0000_0000, 0x100_0000_0000},
}
