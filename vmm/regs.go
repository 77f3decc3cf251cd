package vmm

import (
	"fmt"
	"strings"

	"github.com/bobuhiro11/gokvm/kvm"
)

// Regs and Sregs are KVM's register structures (gokvm mirrors the ABI).
type (
	Regs    = kvm.Regs
	Sregs   = kvm.Sregs
	Segment = kvm.Segment
)

// Regs reads the general-purpose registers.
func (v *VCPU) Regs() (*Regs, error) {
	r, err := kvm.GetRegs(uintptr(v.fd))
	if err != nil {
		return nil, fmt.Errorf("vcpu %d: reading registers: %w", v.ID, err)
	}
	return r, nil
}

// SetRegs writes the general-purpose registers.
func (v *VCPU) SetRegs(r *Regs) error {
	if err := kvm.SetRegs(uintptr(v.fd), r); err != nil {
		return fmt.Errorf("vcpu %d: writing registers: %w", v.ID, err)
	}
	return nil
}

// Sregs reads the segment and control registers.
func (v *VCPU) Sregs() (*Sregs, error) {
	s, err := kvm.GetSregs(uintptr(v.fd))
	if err != nil {
		return nil, fmt.Errorf("vcpu %d: reading special registers: %w", v.ID, err)
	}
	return s, nil
}

// SetSregs writes the segment and control registers.
func (v *VCPU) SetSregs(s *Sregs) error {
	if err := kvm.SetSregs(uintptr(v.fd), s); err != nil {
		return fmt.Errorf("vcpu %d: writing special registers: %w", v.ID, err)
	}
	return nil
}

// DumpRegs formats the vCPU state for a crash report; it never fails
// (unreadable state is reported inline).
func (v *VCPU) DumpRegs() string {
	var b strings.Builder
	r, err := v.Regs()
	if err != nil {
		fmt.Fprintf(&b, "  %v\n", err)
	} else {
		fmt.Fprintf(&b, "  rip=%#016x rflags=%#08x rsp=%#016x rbp=%#016x\n", r.RIP, r.RFLAGS, r.RSP, r.RBP)
		fmt.Fprintf(&b, "  rax=%#016x rbx=%#016x rcx=%#016x rdx=%#016x\n", r.RAX, r.RBX, r.RCX, r.RDX)
		fmt.Fprintf(&b, "  rsi=%#016x rdi=%#016x r8=%#016x r9=%#016x\n", r.RSI, r.RDI, r.R8, r.R9)
		fmt.Fprintf(&b, "  r10=%#016x r11=%#016x r12=%#016x r13=%#016x\n", r.R10, r.R11, r.R12, r.R13)
		fmt.Fprintf(&b, "  r14=%#016x r15=%#016x\n", r.R14, r.R15)
	}
	s, err := v.Sregs()
	if err != nil {
		fmt.Fprintf(&b, "  %v\n", err)
	} else {
		fmt.Fprintf(&b, "  cs=%#04x(base %#x dpl %d l %d db %d) ss=%#04x ds=%#04x\n",
			s.CS.Selector, s.CS.Base, s.CS.DPL, s.CS.L, s.CS.DB, s.SS.Selector, s.DS.Selector)
		fmt.Fprintf(&b, "  cr0=%#x cr2=%#x cr3=%#x cr4=%#x efer=%#x\n", s.CR0, s.CR2, s.CR3, s.CR4, s.EFER)
		fmt.Fprintf(&b, "  gdt=%#x/%#x idt=%#x/%#x", s.GDT.Base, s.GDT.Limit, s.IDT.Base, s.IDT.Limit)
	}
	return b.String()
}
