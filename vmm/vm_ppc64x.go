//go:build ppc64 || ppc64le

package vmm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// archVM is the POWER part of a VM. A pseries machine keeps its interrupt
// controller (XICS) in user space, so there is no irqchip here; under PR
// KVM the VM owns the guest's hash page table, which lives in user memory.
type archVM struct {
	htab []byte // PR KVM's hash page table mapping (SetupHashTable); nil otherwise
}

func (vm *VM) initArch() {}

// closeArch frees the user-space hash page table; Close calls it after
// closing the VM fd, as PR KVM reads the table until then.
func (vm *VM) closeArch() {
	if vm.htab != nil {
		unix.Munmap(vm.htab)
		vm.htab = nil
	}
}

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

// ErrRadixOnly is returned by SetupHashTable when KVM runs this VM's
// guests in radix mode only (HV KVM nested in a pseries partition): there
// is no hash page table, and the machine must configure the v3 MMU for
// radix (ConfigureV3MMU) instead.
var ErrRadixOnly = errors.New("kvm runs radix guests only: no hash page table")

// SetupHashTable gives the guest a hash page table (HPT) of about 2^shift
// bytes and returns the shift in force:
//   - HV KVM allocates and owns it (KVM_PPC_ALLOCATE_HTAB, whose argument
//     is the order in and out: KVM may pick another size);
//   - PR KVM lacks that ioctl (ENOTTY, or EINVAL from older kernels) and
//     reads the table from user memory through SDR1 (HTABORG | HTABSIZE,
//     Power ISA 2.07 Book III-S; HTABSIZE = shift - 18), as QEMU does
//     for PR: the VM maps it, sets every vCPU's SDR1 (KVM_SET_SREGS) and
//     frees it in Close. vcpus are all of the VM's vCPUs;
//   - nested HV KVM answers EOPNOTSUPP: ErrRadixOnly when the VM can run
//     radix guests (KVM_CAP_PPC_MMU_RADIX), else an error.
func (vm *VM) SetupHashTable(shift uint32, vcpus []*VCPU) (uint32, error) {
	got := shift
	_, err := ioctlPtr(vm.fd, ioctlPPCAllocateHTAB, &got)
	switch {
	case err == nil:
		return got, nil
	case errors.Is(err, unix.EOPNOTSUPP):
		if !vm.RadixMMU() {
			return 0, fmt.Errorf("kvm offers neither a hash page table (%v) nor radix", err)
		}
		return 0, ErrRadixOnly
	case !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL):
		return 0, fmt.Errorf("allocating the hash page table: %w", err)
	}
	if shift < 18 || shift > 46 {
		return 0, fmt.Errorf("hash page table of 2^%d bytes: want 2^18 to 2^46", shift)
	}
	if err := vm.userHashTable(shift, vcpus); err != nil {
		return 0, fmt.Errorf("hash page table in user memory (PR KVM): %w", err)
	}
	return shift, nil
}

// userHashTable maps PR KVM's hash page table and points every vCPU's SDR1
// at it. HTABORG must be aligned to the table's size: map twice the size
// and use the aligned half.
func (vm *VM) userHashTable(shift uint32, vcpus []*VCPU) error {
	size := uint64(1) << shift
	buf, err := unix.Mmap(-1, 0, int(2*size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	vm.closeArch() // a table from an earlier call
	vm.htab = buf
	sdr1 := sdr1For(uint64(bytesAddr(buf)), shift)
	for _, c := range vcpus {
		s, err := c.Sregs()
		if err != nil {
			return err
		}
		s.SDR1 = sdr1
		if err := c.SetSregs(s); err != nil {
			return err
		}
	}
	return nil
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

// sdr1For is the SDR1 value for a hash table of 2^shift bytes in a mapping
// of twice that size at base: HTABORG is base rounded up to the table's
// size (the low 18 bits are always zero, as the minimum table is 256 KiB),
// HTABSIZE in the low 5 bits is shift - 18.
func sdr1For(base uint64, shift uint32) uint64 {
	size := uint64(1) << shift
	return (base+size-1)&^(size-1) | uint64(shift-18)
}
