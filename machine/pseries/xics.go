package pseries

import "sync"

// XICS interrupt source numbering (QEMU's XICS_IRQ_BASE; numbers below
// 16 are reserved for IPIs and "no interrupt").
const (
	ICSFirstIRQ = 0x1000
	ICSNumIRQs  = 1024
)

// xicsMasked is the priority that masks a source (PAPR: 0xff = least
// favoured, never presented).
const xicsMasked = 0xff

// XiveEntry is one source's routing: the server (CPU) it is presented to
// and its priority; SavedPriority is what ibm,int-on restores.
type XiveEntry struct {
	Server        uint32
	Priority      uint8
	SavedPriority uint8
}

// Enabled reports whether the source can be presented.
func (e XiveEntry) Enabled() bool { return e.Priority != xicsMasked }

// ICS is the interrupt source controller's table, programmed by the RTAS
// ibm,set-xive / ibm,get-xive / ibm,int-off / ibm,int-on services.
type ICS struct {
	first uint32
	mu    sync.Mutex
	xive  []XiveEntry
}

// NewICS makes n sources numbered from first, all masked and routed to
// server 0 (the reset state QEMU's ics_reset gives).
func NewICS(first uint32, n int) *ICS {
	s := &ICS{first: first, xive: make([]XiveEntry, n)}
	for i := range s.xive {
		s.xive[i] = XiveEntry{Priority: xicsMasked, SavedPriority: xicsMasked}
	}
	return s
}

// Range returns the first source number and the count.
func (s *ICS) Range() (first uint32, n int) { return s.first, len(s.xive) }

// Get returns the source's entry; ok is false outside the table.
func (s *ICS) Get(irq uint32) (XiveEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := uint64(irq) - uint64(s.first)
	if irq < s.first || i >= uint64(len(s.xive)) {
		return XiveEntry{}, false
	}
	return s.xive[i], true
}

// update applies f to the source's entry; false outside the table.
func (s *ICS) update(irq uint32, f func(e *XiveEntry)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := uint64(irq) - uint64(s.first)
	if irq < s.first || i >= uint64(len(s.xive)) {
		return false
	}
	f(&s.xive[i])
	return true
}

// ibm,set-xive: 3 in (irq, server, priority) -> 1 out. An unknown source
// or server or a priority above 0xff is a parameter error.
func rtasSetXive(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(3, 1) {
		return
	}
	irq, server, prio := c.arg(0), c.arg(1), c.arg(2)
	if prio > 0xff || m.cpuByServer(uint64(server)) == nil {
		c.status(RTASParameterError)
		return
	}
	if !m.ics.update(irq, func(e *XiveEntry) {
		e.Server, e.Priority, e.SavedPriority = server, uint8(prio), uint8(prio)
	}) {
		c.status(RTASParameterError)
		return
	}
	c.status(RTASSuccess)
}

// ibm,get-xive: 1 in (irq) -> 3 out (status, server, priority).
func rtasGetXive(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(1, 3) {
		return
	}
	e, ok := m.ics.Get(c.arg(0))
	if !ok {
		c.status(RTASParameterError)
		return
	}
	c.status(RTASSuccess)
	c.ret(1, e.Server)
	c.ret(2, uint32(e.Priority))
}

// ibm,int-off: 1 in (irq) -> 1 out. Masks the source, remembering its
// priority for ibm,int-on.
func rtasIntOff(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(1, 1) {
		return
	}
	if !m.ics.update(c.arg(0), func(e *XiveEntry) { e.Priority = xicsMasked }) {
		c.status(RTASParameterError)
		return
	}
	c.status(RTASSuccess)
}

// ibm,int-on: 1 in (irq) -> 1 out. Restores the priority int-off saved.
func rtasIntOn(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(1, 1) {
		return
	}
	if !m.ics.update(c.arg(0), func(e *XiveEntry) { e.Priority = e.SavedPriority }) {
		c.status(RTASParameterError)
		return
	}
	c.status(RTASSuccess)
}
