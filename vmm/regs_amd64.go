package vmm

import (
	"fmt"
	"strings"
)

// Regs mirrors struct kvm_regs on x86-64 (arch/x86/include/uapi/asm/kvm.h).
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment mirrors struct kvm_segment.
type Segment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Typ, Present, DPL, DB, S, L, G uint8
	AVL, Unusable                  uint8
	_                              uint8
}

// Descriptor mirrors struct kvm_dtable (GDTR, IDTR).
type Descriptor struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs mirrors struct kvm_sregs on x86-64. InterruptBitmap has one bit
// per vector (KVM_NR_INTERRUPTS = 256).
type Sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
	GDT, IDT                        Descriptor
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER, ApicBase                  uint64
	InterruptBitmap                 [4]uint64
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
