package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A machine reset without rebuilding the VM: KVM has no "reset vCPU"
// ioctl, so a machine saves each vCPU's state as KVM created it (after
// KVM_SET_CPUID2, before any boot setup) and writes it back on reset, as
// QEMU's x86_cpu_reset does field by field. The blobs are the kernel's
// structures, copied whole (x86-64 sizes from linux/kvm.h, asserted by the
// ioctl encodings below).
var (
	ioctlGetMSRIndexList = ioc(iocRead|iocWrite, 0x02, 4)
	ioctlGetMSRs         = ioc(iocRead|iocWrite, 0x88, 8)
	ioctlSetMSRs         = ioc(iocWrite, 0x89, 8)
	ioctlGetFPU          = ioc(iocRead, 0x8c, 416)
	ioctlSetFPU          = ioc(iocWrite, 0x8d, 416)
	ioctlGetLAPIC        = ioc(iocRead, 0x8e, 1024)
	ioctlSetLAPIC        = ioc(iocWrite, 0x8f, 1024)
	ioctlGetMPState      = ioc(iocRead, 0x98, 4)
	ioctlSetMPState      = ioc(iocWrite, 0x99, 4)
	ioctlGetVCPUEvents   = ioc(iocRead, 0x9f, 64)
	ioctlSetVCPUEvents   = ioc(iocWrite, 0xa0, 64)
	ioctlGetDebugRegs    = ioc(iocRead, 0xa1, 128)
	ioctlSetDebugRegs    = ioc(iocWrite, 0xa2, 128)
	ioctlGetXCRs         = ioc(iocRead, 0xa6, 392)
	ioctlSetXCRs         = ioc(iocWrite, 0xa7, 392)
	ioctlGetPIT2         = ioc(iocRead, 0x9f, 112)
	ioctlSetPIT2         = ioc(iocWrite, 0xa0, 112)
)

// msrTSC is IA32_TIME_STAMP_COUNTER: left running across a reset (the
// guest's clocks stay monotonic; Linux recalibrates at boot).
const msrTSC = 0x10

// msrEntry mirrors struct kvm_msrs with one struct kvm_msr_entry.
type msrEntry struct {
	NMSRs    uint32
	_        uint32
	Index    uint32
	Reserved uint32
	Data     uint64
}

// vcpuBlob is one GET/SET ioctl pair and its saved bytes. Parts the host
// does not support (an error at save time) are not restored.
type vcpuBlob struct {
	name     string
	get, set uintptr
	data     []byte
}

// VCPUState is a saved vCPU state (SaveState, RestoreState).
type VCPUState struct {
	blobs []vcpuBlob
	msrs  []msrEntry
}

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU
// (KVM_GET_MSR_INDEX_LIST: msrs_to_save and the emulated MSRs, kvmclock's
// among them).
func (k *KVM) MSRIndexList() ([]uint32, error) {
	const max = 1024
	buf := make([]byte, 4*(1+max))
	binary.LittleEndian.PutUint32(buf, max)
	if _, err := bytesRetry(k.fd, ioctlGetMSRIndexList, buf); err != nil {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
	}
	n := min(int(binary.LittleEndian.Uint32(buf)), max)
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(buf[4+4*i:])
	}
	return out, nil
}

// SaveState saves the vCPU's state: registers, FPU, XCRs, LAPIC, MP
// state, pending events, debug registers and the MSRs in msrs (from
// MSRIndexList) that it can read.
func (v *VCPU) SaveState(msrs []uint32) (*VCPUState, error) {
	s := &VCPUState{}
	// The order is the restore order: SET_SREGS sets the APIC base the
	// LAPIC state needs, and the MP state and events go after the LAPIC
	// (QEMU's kvm_arch_put_registers does the same).
	for _, b := range []vcpuBlob{
		{"regs", ioctlGetRegs, ioctlSetRegs, make([]byte, 144)},
		{"fpu", ioctlGetFPU, ioctlSetFPU, make([]byte, 416)},
		{"xcrs", ioctlGetXCRs, ioctlSetXCRs, make([]byte, 392)},
		{"sregs", ioctlGetSregs, ioctlSetSregs, make([]byte, 312)},
		{"lapic", ioctlGetLAPIC, ioctlSetLAPIC, make([]byte, 1024)},
		{"mp state", ioctlGetMPState, ioctlSetMPState, make([]byte, 4)},
		{"vcpu events", ioctlGetVCPUEvents, ioctlSetVCPUEvents, make([]byte, 64)},
		{"debug registers", ioctlGetDebugRegs, ioctlSetDebugRegs, make([]byte, 128)},
	} {
		if _, err := bytesRetry(v.fd, b.get, b.data); err != nil {
			if b.name == "regs" || b.name == "sregs" {
				return nil, fmt.Errorf("vcpu %d: saving %s: %w", v.ID, b.name, err)
			}
			continue // not on this host: left as it is on reset
		}
		if b.name == "vcpu events" {
			// KVM_VCPUEVENT_VALID_NMI_PENDING | _SIPI_VECTOR (flags at
			// offset 20): the restore also clears a pending NMI and SIPI.
			b.data[20] |= 0x3
		}
		s.blobs = append(s.blobs, b)
	}
	for _, idx := range msrs {
		if idx == msrTSC {
			continue
		}
		e := msrEntry{NMSRs: 1, Index: idx}
		if n, err := ioctlPtr(v.fd, ioctlGetMSRs, &e); err == nil && n == 1 {
			s.msrs = append(s.msrs, e)
		}
	}
	return s, nil
}

// RestoreState writes s back. MSRs the host refuses to set are skipped
// (a few read-only ones are in KVM's list); everything else is an error.
func (v *VCPU) RestoreState(s *VCPUState) error {
	var errs []error
	for _, b := range s.blobs {
		data := append([]byte(nil), b.data...) // SET must not change the saved copy
		if _, err := bytesRetry(v.fd, b.set, data); err != nil {
			errs = append(errs, fmt.Errorf("vcpu %d: restoring %s: %w", v.ID, b.name, err))
		}
		if b.name == "sregs" {
			// MSRs after the APIC base (sregs), before the LAPIC: x2APIC
			// mode and the kvmclock pages are MSRs.
			v.restoreMSRs(s.msrs)
		}
	}
	return errors.Join(errs...)
}

func (v *VCPU) restoreMSRs(msrs []msrEntry) {
	for _, e := range msrs {
		ioctlPtr(v.fd, ioctlSetMSRs, &e) // refused ones (read-only) are skipped
	}
}

// bytesRetry is ioctlBytes retried on EINTR (Go's preemption signal; the
// vCPUs are not running while state is saved or restored).
func bytesRetry(fd int, req uintptr, b []byte) (uintptr, error) {
	for {
		r, err := ioctlBytes(fd, req, b)
		if !errors.Is(err, unix.EINTR) {
			return r, err
		}
	}
}

// ClearStop forgets the stop request that ended the last Run, so that the
// vCPU can run again after a machine reset.
func (v *VCPU) ClearStop() {
	v.stopReq.Store(int32(StopNone))
	v.lastErr = nil
}

// IRQChipState is the saved state of the in-kernel PICs, IOAPIC and PIT.
type IRQChipState struct {
	chips  [3]kvmIRQChip
	pit    [112]byte
	hasPIT bool
}

// SaveIRQChips saves the in-kernel interrupt controllers and PIT.
func (vm *VM) SaveIRQChips() (*IRQChipState, error) {
	s := &IRQChipState{}
	for i := range s.chips {
		s.chips[i].ChipID = uint32(i)
		if _, err := ioctlPtr(vm.fd, ioctlGetIRQChip, &s.chips[i]); err != nil {
			return nil, fmt.Errorf("saving irqchip %d: %w", i, err)
		}
	}
	if _, err := bytesRetry(vm.fd, ioctlGetPIT2, s.pit[:]); err == nil {
		s.hasPIT = true
	} else if !errors.Is(err, unix.ENXIO) {
		return nil, fmt.Errorf("saving pit: %w", err)
	}
	return s, nil
}

// RestoreIRQChips writes s back (machine reset).
func (vm *VM) RestoreIRQChips(s *IRQChipState) error {
	for i := range s.chips {
		c := s.chips[i]
		if _, err := ioctlPtr(vm.fd, ioctlSetIRQChip, &c); err != nil {
			return fmt.Errorf("restoring irqchip %d: %w", i, err)
		}
	}
	if s.hasPIT {
		pit := s.pit
		if _, err := bytesRetry(vm.fd, ioctlSetPIT2, pit[:]); err != nil {
			return fmt.Errorf("restoring pit: %w", err)
		}
	}
	return nil
}
