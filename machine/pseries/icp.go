package pseries

// The XICS presentation controller (ICP) per server, as PAPR's
// "hcall-interrupt" function set exposes it and QEMU's hw/intc/xics.c
// models it. XIRR is CPPR (current processor priority, bits 31:24) and
// XISR (the source being presented, bits 23:0); MFRR is the IPI priority.
// Lower numbers are more favoured; 0xff is "nothing".

const (
	xicsIPI  = 2 // XISR value of an inter-processor interrupt
	xisrMask = 0x00ff_ffff
)

// Hypercall numbers of the hcall-interrupt set (hvcall.h).
const (
	HEOI   = 0x64
	HCPPR  = 0x68
	HIPI   = 0x6c
	HIPOLL = 0x70
	HXIRR  = 0x74
)

// presenter is one server's ICP. Guarded by ICS.mu. Invariant: raised is
// true exactly while XISR is non-zero (an interrupt is being presented
// and not yet accepted with H_XIRR), so the vCPU's external interrupt
// input follows XISR.
type presenter struct {
	xirr        uint32 // CPPR<<24 | XISR
	pendingPrio uint8  // priority of the source in XISR (0xff: none)
	mfrr        uint8  // the IPI's priority, set by H_IPI (0xff: no IPI)
	raised      bool   // the line as last driven through ICS.out
}

func (p *presenter) reset() {
	*p = presenter{pendingPrio: xicsMasked, mfrr: xicsMasked}
}

func (p *presenter) cppr() uint8  { return uint8(p.xirr >> 24) }
func (p *presenter) xisr() uint32 { return p.xirr & xisrMask }

// Pending reports whether the server's external interrupt line is raised.
func (s *ICS) Pending(server uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(server) < len(s.icp) && s.icp[server].raised
}

// setLine drives the server's line, telling the machine on changes.
func (s *ICS) setLine(server uint32, raise bool) {
	p := &s.icp[server]
	if p.raised == raise {
		return
	}
	p.raised = raise
	if s.out != nil {
		s.out(server, raise)
	}
}

// present offers source irq at prio to a server: taken if more favoured
// than both the CPPR and what is pending there (which is then rejected),
// else rejected itself. Called with mu held.
func (s *ICS) present(server, irq uint32, prio uint8) {
	if int(server) >= len(s.icp) {
		s.reject(irq)
		return
	}
	p := &s.icp[server]
	if prio >= p.cppr() || p.xisr() != 0 && p.pendingPrio <= prio {
		s.reject(irq)
		return
	}
	if old := p.xisr(); old != 0 {
		s.reject(old)
	}
	p.xirr = p.xirr&^xisrMask | irq
	p.pendingPrio = prio
	s.setLine(server, true)
}

// checkIPI presents the IPI if MFRR beats what is pending.
func (s *ICS) checkIPI(server uint32) {
	p := &s.icp[server]
	if p.xisr() != 0 && p.pendingPrio <= p.mfrr {
		return
	}
	if old := p.xisr(); old != 0 {
		s.reject(old)
	}
	p.xirr = p.xirr&^xisrMask | xicsIPI
	p.pendingPrio = p.mfrr
	s.setLine(server, true)
}

// resend re-offers the IPI and every rejected source after the server
// became able to take more.
func (s *ICS) resend(server uint32) {
	p := &s.icp[server]
	if p.mfrr < p.cppr() {
		s.checkIPI(server)
	}
	s.resendAll()
}

// setCPPR is H_CPPR (QEMU's icp_set_cppr). A more favoured (lower) CPPR
// may no longer admit the interrupt being presented: it is withdrawn, the
// line lowered, and the source rejected so it is offered again later. A
// less favoured CPPR with nothing presented re-offers the IPI and the
// rejected sources, which it may now admit. Called with mu held.
func (s *ICS) setCPPR(server uint32, cppr uint8) {
	p := &s.icp[server]
	old := p.cppr()
	p.xirr = p.xirr&xisrMask | uint32(cppr)<<24
	if cppr < old {
		if x := p.xisr(); x != 0 && cppr <= p.pendingPrio {
			p.xirr &^= xisrMask
			p.pendingPrio = xicsMasked
			s.setLine(server, false)
			s.reject(x)
		}
		return
	}
	if p.xisr() == 0 {
		s.resend(server)
	}
}

// setMFRR is H_IPI's effect on the target: an MFRR more favoured than the
// CPPR presents the IPI (XISR 2). A less favoured one leaves an IPI
// already presented in place until H_XIRR takes it, as QEMU's
// icp_set_mfrr does. Called with mu held.
func (s *ICS) setMFRR(server uint32, mfrr uint8) {
	p := &s.icp[server]
	p.mfrr = mfrr
	if mfrr < p.cppr() {
		s.checkIPI(server)
	}
}

// accept is H_XIRR: hand over XIRR, raise CPPR to the accepted priority.
func (s *ICS) accept(server uint32) uint32 {
	p := &s.icp[server]
	s.setLine(server, false)
	x := p.xirr
	p.xirr = uint32(p.pendingPrio) << 24
	p.pendingPrio = xicsMasked
	return x
}

// eoi is H_EOI: CPPR goes back to the XIRR's top byte (the priority the
// guest had before it accepted), the source hears its interrupt ended
// (an LSI still asserted fires again), and with nothing presented the IPI
// and rejected sources are offered again. Called with mu held.
func (s *ICS) eoi(server uint32, xirr uint32) {
	p := &s.icp[server]
	p.xirr = p.xirr&xisrMask | xirr&^xisrMask
	s.eoiSource(xirr & xisrMask)
	if p.xisr() == 0 {
		s.resend(server)
	}
}

// The hcalls act on the calling CPU's presenter, except H_IPI and
// H_IPOLL, which name a server.

// hCPPR is H_CPPR: r4 the new CPPR (low byte).
func hCPPR(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	m.ics.mu.Lock()
	defer m.ics.mu.Unlock()
	m.ics.setCPPR(cpu.Server, uint8(args[0]))
	return HSuccess
}

// hIPI is H_IPI: r4 target server, r5 MFRR. Unknown server: H_PARAMETER.
func hIPI(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	t := m.cpuByServer(args[0])
	if t == nil {
		return HParameter
	}
	m.ics.mu.Lock()
	m.ics.setMFRR(t.Server, uint8(args[1]))
	m.ics.mu.Unlock()
	return HSuccess
}

// hXIRR is H_XIRR: accept the pending interrupt -> r4 XIRR.
func hXIRR(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	m.ics.mu.Lock()
	args[0] = uint64(m.ics.accept(cpu.Server))
	m.ics.mu.Unlock()
	return HSuccess
}

// hEOI is H_EOI: r4 the XIRR being ended (its CPPR is restored).
func hEOI(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	m.ics.mu.Lock()
	m.ics.eoi(cpu.Server, uint32(args[0]))
	m.ics.mu.Unlock()
	return HSuccess
}

// hIPOLL is H_IPOLL: r4 server -> r4 XIRR, r5 MFRR, without accepting.
func hIPOLL(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	t := m.cpuByServer(args[0])
	if t == nil {
		return HParameter
	}
	m.ics.mu.Lock()
	p := &m.ics.icp[t.Server]
	args[0], args[1] = uint64(p.xirr), uint64(p.mfrr)
	m.ics.mu.Unlock()
	return HSuccess
}

func init() {
	registerHcall(HCPPR, hCPPR)
	registerHcall(HIPI, hIPI)
	registerHcall(HXIRR, hXIRR)
	registerHcall(HEOI, hEOI)
	registerHcall(HIPOLL, hIPOLL)
}
