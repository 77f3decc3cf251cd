//go:build ppc64 || ppc64le

package vmm

import "fmt"

// archVM is the POWER part of a VM: none; a pseries machine keeps its
// interrupt controller (XICS) in user space.
type archVM struct{}

func (vm *VM) initArch() {}

// checkExtension is KVM_CHECK_EXTENSION on the VM fd: on POWER the answer
// depends on the VM's flavour (HV or PR), so it is asked of the VM.
func (vm *VM) checkExtension(c uintptr) bool {
	n, err := ioctlRetry(vm.fd, ioctlCheckExtension, c)
	return err == nil && n > 0
}

// CheckPAPR fails unless this VM can run a PAPR (pseries) guest, whose
// hypercalls exit to user space as KVM_EXIT_PAPR_HCALL.
func (vm *VM) CheckPAPR() error {
	if !vm.checkExtension(capPPCPAPR) {
		return fmt.Errorf("%w: KVM_CAP_PPC_PAPR (%d), needed for PAPR guests", ErrMissingCapability, capPPCPAPR)
	}
	return nil
}

// RadixMMU reports whether the VM can run radix (ISA v3.00) guests.
func (vm *VM) RadixMMU() bool { return vm.checkExtension(capPPCMMURadix) }

// AllocateHTAB asks KVM (HV) to allocate the guest's hash page table of
// 2^shift bytes (KVM_PPC_ALLOCATE_HTAB) and returns the shift it chose.
// PR KVM lacks the ioctl (ENOTTY or EINVAL); nested HV KVM, which runs
// guests in radix mode only, answers EOPNOTSUPP.
func (vm *VM) AllocateHTAB(shift uint32) (uint32, error) {
	if _, err := ioctlPtr(vm.fd, ioctlPPCAllocateHTAB, &shift); err != nil {
		return 0, fmt.Errorf("allocating the hash page table: %w", err)
	}
	return shift, nil
}

// kvmPPCMMUv3Cfg mirrors struct kvm_ppc_mmuv3_cfg.
type kvmPPCMMUv3Cfg struct {
	Flags, ProcessTable uint64
}

// KVM_PPC_MMUV3_* flags.
const (
	mmuV3Radix = 1 // guest uses radix translation
	mmuV3GTSE  = 2 // guest may issue tlbie itself
)

// ConfigureV3MMU sets the VM's ISA v3.00 MMU mode and process table entry
// (KVM_PPC_CONFIGURE_V3_MMU; KVM wants PATE1_GR in the table word exactly
// when the mode is radix).
func (vm *VM) ConfigureV3MMU(radix, gtse bool, processTable uint64) error {
	c := kvmPPCMMUv3Cfg{ProcessTable: processTable}
	if radix {
		c.Flags |= mmuV3Radix
	}
	if gtse {
		c.Flags |= mmuV3GTSE
	}
	if _, err := ioctlPtr(vm.fd, ioctlPPCConfigureMMU3, &c); err != nil {
		return fmt.Errorf("configuring the v3 mmu (radix %v): %w", radix, err)
	}
	return nil
}
