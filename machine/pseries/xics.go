package pseries

import "sync"

// XICS interrupt source numbering (QEMU's XICS_IRQ_BASE; numbers below
// 16 are reserved: 0 means "no interrupt", 2 is the IPI).
const (
	ICSFirstIRQ = 0x1000
	ICSNumIRQs  = 1024
)

// xicsMasked is the priority that masks a source (PAPR: 0xff = least
// favoured, never presented).
const xicsMasked = 0xff

// Source status bits (the state machine of QEMU's ics_simple).
const (
	srcAsserted      = 1 << iota // LSI: the line is high
	srcSent                      // LSI: presented, not yet EOIed
	srcRejected                  // MSI: a presenter turned it away; resend later
	srcMaskedPending             // MSI: fired while masked; deliver on unmask
)

// XiveEntry is one source's routing: the server (CPU) it is presented to
// and its priority; SavedPriority is what ibm,int-on restores.
type XiveEntry struct {
	Server        uint32
	Priority      uint8
	SavedPriority uint8
}

// Enabled reports whether the source can be presented.
func (e XiveEntry) Enabled() bool { return e.Priority != xicsMasked }

type source struct {
	XiveEntry
	lsi    bool
	status uint8
}

// ICS is the XICS interrupt controller: the source table (ICS, programmed
// through the RTAS ibm,set-xive / ibm,get-xive / ibm,int-off / ibm,int-on
// services) and one presentation controller per server (ICP, driven by
// the H_CPPR / H_IPI / H_XIRR / H_EOI / H_IPOLL hypercalls, icp.go).
//
// One mutex guards both halves, since delivery crosses between them in
// both directions (present, reject, resend); the output callback is
// called with it held and must not call back into the ICS.
type ICS struct {
	first uint32
	mu    sync.Mutex
	src   []source
	icp   []presenter
	// out raises or lowers the external interrupt line of a server. It
	// is set by the machine (KVM_INTERRUPT on the vCPU); nil in tests
	// that watch Pending instead.
	out func(server uint32, raise bool)
}

// NewICS makes n sources numbered from first, all MSI, masked and routed
// to server 0 (the reset state QEMU's ics_reset gives), and servers
// presentation controllers.
func NewICS(first uint32, n, servers int) *ICS {
	s := &ICS{first: first, src: make([]source, n), icp: make([]presenter, servers)}
	for i := range s.src {
		s.src[i].Priority, s.src[i].SavedPriority = xicsMasked, xicsMasked
	}
	for i := range s.icp {
		s.icp[i].reset()
	}
	return s
}

// SetOutput installs the line-raising callback.
func (s *ICS) SetOutput(out func(server uint32, raise bool)) {
	s.mu.Lock()
	s.out = out
	s.mu.Unlock()
}

// Range returns the first source number and the count.
func (s *ICS) Range() (first uint32, n int) { return s.first, len(s.src) }

// index maps a global source number to the table; ok false outside it.
func (s *ICS) index(irq uint32) (int, bool) {
	i := uint64(irq) - uint64(s.first)
	if irq < s.first || i >= uint64(len(s.src)) {
		return 0, false
	}
	return int(i), true
}

// Get returns the source's routing; ok is false outside the table.
func (s *ICS) Get(irq uint32) (XiveEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index(irq)
	if !ok {
		return XiveEntry{}, false
	}
	return s.src[i].XiveEntry, true
}

// SetLSI makes a source level-triggered (a device's interrupt line).
func (s *ICS) SetLSI(irq uint32, lsi bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index(irq)
	if ok {
		s.src[i].lsi = lsi
	}
	return ok
}

// Trigger fires an edge (MSI) source.
func (s *ICS) Trigger(irq uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index(irq)
	if !ok || s.src[i].lsi {
		return false
	}
	src := &s.src[i]
	if src.Priority == xicsMasked {
		src.status |= srcMaskedPending
		return true
	}
	s.present(src.Server, irq, src.Priority)
	return true
}

// SetLevel drives a level (LSI) source.
func (s *ICS) SetLevel(irq uint32, high bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index(irq)
	if !ok || !s.src[i].lsi {
		return false
	}
	if high {
		s.src[i].status |= srcAsserted
	} else {
		s.src[i].status &^= srcAsserted
	}
	s.resendSource(i)
	return true
}

// resendSource re-offers one source if it has something to deliver.
// Called with mu held.
func (s *ICS) resendSource(i int) {
	src := &s.src[i]
	irq := s.first + uint32(i)
	if src.Priority == xicsMasked {
		return
	}
	if src.lsi {
		if src.status&srcAsserted != 0 && src.status&srcSent == 0 {
			src.status |= srcSent
			s.present(src.Server, irq, src.Priority)
		}
		return
	}
	if src.status&(srcRejected|srcMaskedPending) != 0 {
		src.status &^= srcRejected | srcMaskedPending
		s.present(src.Server, irq, src.Priority)
	}
}

// resendAll re-offers every source a presenter turned away. Called with
// mu held.
func (s *ICS) resendAll() {
	for i := range s.src {
		s.resendSource(i)
	}
}

// reject takes back a presented source (a more favoured one won, or the
// CPPR rose above it). Called with mu held.
func (s *ICS) reject(irq uint32) {
	i, ok := s.index(irq)
	if !ok {
		return // the IPI: the presenter re-derives it from MFRR
	}
	if s.src[i].lsi {
		s.src[i].status &^= srcSent
	} else {
		s.src[i].status |= srcRejected
	}
}

// eoiSource ends a source's service: an LSI still asserted is presented
// again by the resend that follows. Called with mu held.
func (s *ICS) eoiSource(irq uint32) {
	if i, ok := s.index(irq); ok && s.src[i].lsi {
		s.src[i].status &^= srcSent
	}
}

// writeXive sets routing and re-offers the source (an unmasked MSI that
// fired while masked, an asserted LSI).
func (s *ICS) writeXive(irq, server uint32, prio, saved uint8) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index(irq)
	if !ok {
		return false
	}
	s.src[i].XiveEntry = XiveEntry{Server: server, Priority: prio, SavedPriority: saved}
	s.resendSource(i)
	return true
}

// setEnabled is ibm,int-on / ibm,int-off: the priority becomes the saved
// one or masked; the saved priority and server stay.
func (s *ICS) setEnabled(irq uint32, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index(irq)
	if !ok {
		return false
	}
	if on {
		s.src[i].Priority = s.src[i].SavedPriority
	} else {
		s.src[i].Priority = xicsMasked
	}
	s.resendSource(i)
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
	if !m.ics.writeXive(irq, server, uint8(prio), uint8(prio)) {
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
	if !m.ics.setEnabled(c.arg(0), false) {
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
	if !m.ics.setEnabled(c.arg(0), true) {
		c.status(RTASParameterError)
		return
	}
	c.status(RTASSuccess)
}
