//go:build ppc64 || ppc64le

package vmm

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Regs mirrors struct kvm_regs on powerpc (arch/powerpc/include/uapi/asm/kvm.h).
type Regs struct {
	PC, CR, CTR, LR, XER, MSR, SRR0, SRR1, PID uint64
	SPRG                                       [8]uint64
	GPR                                        [32]uint64
}

// Sregs mirrors struct kvm_sregs on powerpc with only the Book3S view of
// its union (u.s): SDR1 and the SLB. The 32-bit segment and BAT registers
// are kept as bytes so KVM_SET_SREGS writes back what KVM_GET_SREGS gave.
type Sregs struct {
	PVR   uint32
	_     uint32 // the union is 8-byte aligned
	SDR1  uint64
	SLB   [64][2]uint64 // slbe, slbv
	PPC32 [192]byte     // sr[16], ibat[8], dbat[8]
}

// kvmEnableCap mirrors struct kvm_enable_cap.
type kvmEnableCap struct {
	Cap, Flags uint32
	Args       [4]uint64
	_          [64]byte
}

// EnablePAPR puts the vCPU in PAPR mode: its hypercalls exit to user space
// as KVM_EXIT_PAPR_HCALL (KVM_ENABLE_CAP of KVM_CAP_PPC_PAPR on the vCPU,
// as QEMU's kvmppc_set_papr does), and its interrupt vectors are at real
// address 0, where a PAPR partition has them. PR KVM emulates a HIOR
// (interrupt vector base, KVM_REG_PPC_HIOR) that must be set to 0 for
// that; HV KVM has no such register and answers ENOENT or EINVAL, which
// is fine.
func (v *VCPU) EnablePAPR() error {
	c := kvmEnableCap{Cap: capPPCPAPR}
	if _, err := ioctlPtr(v.fd, ioctlEnableCap, &c); err != nil {
		return fmt.Errorf("vcpu %d: enabling KVM_CAP_PPC_PAPR: %w", v.ID, err)
	}
	if err := v.SetOneReg(regPPCHIOR, 0); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}

// ONE_REG ids (asm/kvm.h: KVM_REG_PPC | KVM_REG_SIZE_U64 | index).
const (
	regPPCHIOR = 0x1030000000000001 // PR KVM's interrupt vector base
	RegPPCLPCR = 0x10300000000000b5 // LPCR (64-bit view)
)

// kvmOneReg mirrors struct kvm_one_reg.
type kvmOneReg struct {
	ID, Addr uint64
}

// SetOneReg writes the 64-bit register id (KVM_SET_ONE_REG). The error
// wraps the errno, so a caller can tell "no such register" (ENOENT,
// EINVAL) from a failure.
func (v *VCPU) SetOneReg(id, val uint64) error {
	r := kvmOneReg{ID: id, Addr: uint64(uintptr(unsafe.Pointer(&val)))}
	if _, err := ioctlPtr(v.fd, ioctlSetOneReg, &r); err != nil {
		return fmt.Errorf("vcpu %d: setting register %#x: %w", v.ID, id, err)
	}
	return nil
}

// KVM_INTERRUPT arguments on powerpc (asm/kvm.h): raise the external
// interrupt as a level, or lower it.
const (
	interruptUnset    = 0xfffffffe // KVM_INTERRUPT_UNSET, -2U
	interruptSetLevel = 0xfffffffd // KVM_INTERRUPT_SET_LEVEL, -3U
)

// SetExternalInterrupt raises or lowers the vCPU's external interrupt
// input. POWER serves KVM_INTERRUPT asynchronously, so this may be called
// from any thread while the vCPU runs.
func (v *VCPU) SetExternalInterrupt(raise bool) error {
	irq := uint32(interruptUnset)
	if raise {
		irq = interruptSetLevel
	}
	if _, err := ioctlPtr(v.fd, ioctlInterrupt, &irq); err != nil {
		return fmt.Errorf("vcpu %d: KVM_INTERRUPT: %w", v.ID, err)
	}
	return nil
}
