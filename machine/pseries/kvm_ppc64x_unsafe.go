//go:build ppc64 || ppc64le

package pseries

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlPtr issues an ioctl whose argument is a pointer to p.
func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if e != 0 {
		return e
	}
	return nil
}

// ioctlVal issues an ioctl with an integer argument and returns its result.
func ioctlVal(fd int, req, arg uintptr) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

func setUserMemoryRegion(vmFd int, slot uint32, gpa uint64, host []byte) error {
	r := kvmUserspaceMemoryRegion{
		Slot:          slot,
		GuestPhysAddr: gpa,
		MemorySize:    uint64(len(host)),
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&host[0]))),
	}
	return ioctlPtr(vmFd, kvmSetUserMemoryRegion, unsafe.Pointer(&r))
}

func enableCap(fd int, c *kvmEnableCap) error {
	return ioctlPtr(fd, kvmEnableCapIoctl, unsafe.Pointer(c))
}

func getRegs(fd int, r *kvmRegs) error { return ioctlPtr(fd, kvmGetRegs, unsafe.Pointer(r)) }
func setRegs(fd int, r *kvmRegs) error { return ioctlPtr(fd, kvmSetRegs, unsafe.Pointer(r)) }

func getSregs(fd int, s *kvmSregs) error { return ioctlPtr(fd, kvmGetSregs, unsafe.Pointer(s)) }
func setSregs(fd int, s *kvmSregs) error { return ioctlPtr(fd, kvmSetSregs, unsafe.Pointer(s)) }

func setOneReg(fd int, id uint64, val uint64) error {
	r := kvmOneReg{ID: id, Addr: uint64(uintptr(unsafe.Pointer(&val)))}
	return ioctlPtr(fd, kvmSetOneReg, unsafe.Pointer(&r))
}

// setExternalInterrupt raises or lowers a vCPU's external interrupt
// input. powerpc serves KVM_INTERRUPT asynchronously, so this may be
// called from any thread while the vCPU runs.
func setExternalInterrupt(fd int, raise bool) error {
	irq := uint32(kvmInterruptUnset)
	if raise {
		irq = kvmInterruptSetLevel
	}
	return ioctlPtr(fd, kvmInterrupt, unsafe.Pointer(&irq))
}

// allocateHTAB asks KVM (HV) to allocate the hash page table; the kernel
// writes back the shift it chose.
func allocateHTAB(vmFd int, shift uint32) (uint32, error) {
	err := ioctlPtr(vmFd, kvmPPCAllocateHTAB, unsafe.Pointer(&shift))
	return shift, err
}

// configureV3MMU sets the VM's ISA v3.00 MMU mode and process table
// (KVM_PPC_CONFIGURE_V3_MMU; KVM wants PATE1_GR in the table word exactly
// when the mode is radix).
func configureV3MMU(vmFd int, c MMUConfig) error {
	cfg := kvmPPCMMUv3Cfg{ProcessTable: c.ProcessTable}
	if c.Radix {
		cfg.Flags |= kvmMMUv3Radix
	}
	if c.GTSE {
		cfg.Flags |= kvmMMUv3GTSE
	}
	return ioctlPtr(vmFd, kvmPPCConfigureV3MMU, unsafe.Pointer(&cfg))
}

// hostAddr is the host virtual address of b's first byte (for SDR1 under
// PR KVM, which reads the guest's hash table from user memory).
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// runView gives typed access to a vCPU's mmap'd kvm_run without copying,
// so the exit path neither allocates nor serialises.
type runView struct {
	raw []byte
}

func (r runView) exitReason() uint32 {
	return *(*uint32)(unsafe.Pointer(&r.raw[kvmRunExitReasonOff]))
}

func (r runView) setImmediateExit(v bool) {
	b := byte(0)
	if v {
		b = 1
	}
	*(*byte)(unsafe.Pointer(&r.raw[kvmRunImmediateExit])) = b
}

func (r runView) papr() *kvmRunPAPRHcall {
	return (*kvmRunPAPRHcall)(unsafe.Pointer(&r.raw[kvmRunUnionOff]))
}

func (r runView) mmio() *kvmRunMMIO {
	return (*kvmRunMMIO)(unsafe.Pointer(&r.raw[kvmRunUnionOff]))
}
