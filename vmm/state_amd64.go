package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// The state of a vCPU and of the VM's in-kernel devices, read and written
// whole for two uses:
//
//   - machine reset without rebuilding the VM: KVM has no "reset vCPU"
//     ioctl, so a machine saves each vCPU's state as KVM created it (after
//     KVM_SET_CPUID2, before any boot setup) and writes it back on reset,
//     as QEMU's x86_cpu_reset does field by field (SaveState);
//   - savevm/loadvm: the state of a paused vCPU, the TSC included, written
//     into a fresh VM in another process (SaveFullState, and the encoding
//     in statecodec_amd64.go).
//
// The blobs are the kernel's structures, copied whole (x86-64 sizes from
// linux/kvm.h, asserted by the ioctl encodings below and abi_amd64_test.go).
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
	ioctlGetXSAVE        = ioc(iocRead, 0xa4, 4096)
	ioctlSetXSAVE        = ioc(iocWrite, 0xa5, 4096)
	ioctlGetXCRs         = ioc(iocRead, 0xa6, 392)
	ioctlSetXCRs         = ioc(iocWrite, 0xa7, 392)
	ioctlGetXSAVE2       = ioc(iocRead, 0xcf, 4096) // the size is KVM_CAP_XSAVE2's answer
	ioctlGetPIT2         = ioc(iocRead, 0x9f, 112)
	ioctlSetPIT2         = ioc(iocWrite, 0xa0, 112)
	ioctlSetClock        = ioc(iocWrite, 0x7b, 48)
	ioctlGetClock        = ioc(iocRead, 0x7c, 48)
)

// capXSAVE2 is KVM_CAP_XSAVE2: its answer is the size of the XSAVE buffer
// (more than 4096 bytes with dynamic features such as AMX).
const capXSAVE2 = 208

const (
	// msrTSC is IA32_TIME_STAMP_COUNTER: left running across a reset (the
	// guest's clocks stay monotonic; Linux recalibrates at boot), saved
	// and restored by savevm/loadvm, as QEMU does.
	msrTSC = 0x10
	// msrTSCDeadline is IA32_TSC_DEADLINE: KVM ignores a write while the
	// LAPIC timer is not in TSC-deadline mode, so it is restored after
	// the LAPIC (and after the TSC it counts against).
	msrTSCDeadline = 0x6e0
	// maxMSRs bounds KVM_GET_MSR_INDEX_LIST and a saved MSR list.
	maxMSRs = 1024
	// xsaveLegacySize is struct kvm_xsave; maxXSAVE bounds a saved XSAVE
	// area (KVM_CAP_XSAVE2's answer: about 11 KiB with AMX today).
	xsaveLegacySize = 4096
	maxXSAVE        = 64 << 10
)

// The MTRRs, which KVM emulates but leaves out of KVM_GET_MSR_INDEX_LIST
// (QEMU saves them by hand too): the variable pairs (MTRRphysBase/Mask
// 0-7), the fixed-range ones and MTRRdefType. A vCPU without MTRRs in its
// CPUID refuses to read them, and they are then not saved.
func mtrrMSRs() []uint32 {
	l := []uint32{0x250, 0x258, 0x259, 0x2ff}
	for i := uint32(0); i < 16; i++ {
		l = append(l, 0x200+i)
	}
	for i := uint32(0); i < 8; i++ {
		l = append(l, 0x268+i)
	}
	return l
}

// msrEntry mirrors struct kvm_msrs with one struct kvm_msr_entry.
type msrEntry struct {
	NMSRs    uint32
	_        uint32
	Index    uint32
	Reserved uint32
	Data     uint64
}

// vcpuPart is one GET/SET ioctl pair of a vCPU and its structure's size
// (0: the XSAVE area, sized by the host).
type vcpuPart struct {
	name     string
	get, set uintptr
	size     int
}

// vcpuParts in the order they are read, as QEMU's kvm_arch_get_registers:
// KVM_GET_MP_STATE may take a pending INIT or SIPI, which changes CS and
// RIP, so it goes before the registers.
var vcpuParts = []vcpuPart{
	{"vcpu events", ioctlGetVCPUEvents, ioctlSetVCPUEvents, 64},
	{"mp state", ioctlGetMPState, ioctlSetMPState, 4},
	{"regs", ioctlGetRegs, ioctlSetRegs, 144},
	{"fpu", ioctlGetFPU, ioctlSetFPU, 416},
	{"xsave", ioctlGetXSAVE, ioctlSetXSAVE, 0},
	{"xcrs", ioctlGetXCRs, ioctlSetXCRs, 392},
	{"sregs", ioctlGetSregs, ioctlSetSregs, 312},
	{"lapic", ioctlGetLAPIC, ioctlSetLAPIC, 1024},
	{"debug registers", ioctlGetDebugRegs, ioctlSetDebugRegs, 128},
}

// restoreOrder is the order parts are written back, after QEMU's
// kvm_arch_put_registers (with its LAPIC, which QEMU's APIC device puts
// earlier, placed after the MSRs as Petrel's reset always did):
//
//  1. sregs: CR0/CR4/EFER and the APIC base (xAPIC or x2APIC mode), which
//     the MSRs and the LAPIC state are interpreted in;
//  2. regs; then fpu and xsave (xsave, a superset, last) and xcrs;
//  3. the MSRs (the TSC first; kvmclock, PV EOI and the rest);
//  4. lapic (registers, IRR/ISR: a pending interrupt; the timer restarts
//     from its saved current count); then IA32_TSC_DEADLINE, which KVM
//     drops unless the LAPIC timer is in deadline mode;
//  5. vcpu events (a pending exception, NMI or injected interrupt, the
//     interrupt shadow) and mp state (halted, waiting for SIPI);
//  6. debug registers.
var restoreOrder = []string{"sregs", "regs", "fpu", "xsave", "xcrs", "msrs", "lapic", "tsc deadline",
	"vcpu events", "mp state", "debug registers"}

// VCPUState is a saved vCPU state (SaveState or SaveFullState, then
// RestoreState; a full one is also a vmstate.Stater, statecodec_amd64.go).
type VCPUState struct {
	parts map[string][]byte // by vcpuPart name; a part the host lacked is absent
	msrs  []msrEntry
	// full: saved for savevm (the TSC included) or loaded from a stream;
	// restoring it fails on anything the new vCPU cannot take.
	full bool
}

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU
// (KVM_GET_MSR_INDEX_LIST: msrs_to_save and the emulated MSRs, kvmclock's
// among them).
func (k *KVM) MSRIndexList() ([]uint32, error) {
	buf := make([]byte, 4*(1+maxMSRs))
	binary.LittleEndian.PutUint32(buf, maxMSRs)
	if _, err := bytesRetry(k.fd, ioctlGetMSRIndexList, buf); err != nil {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
	}
	n := min(int(binary.LittleEndian.Uint32(buf)), maxMSRs)
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(buf[4+4*i:])
	}
	return out, nil
}

// SaveState saves the vCPU's state for a machine reset: registers, FPU
// and XSAVE area, XCRs, LAPIC, MP state, pending events, debug registers,
// the MTRRs and the MSRs in msrs (from MSRIndexList) that it can read,
// except the TSC.
func (v *VCPU) SaveState(msrs []uint32) (*VCPUState, error) { return v.saveState(msrs, false) }

// SaveFullState saves a paused vCPU's state for savevm: what SaveState
// saves, and the TSC. The vCPU must be stopped or paused (VCPU.Run
// completes a pending I/O instruction before it parks or returns).
func (v *VCPU) SaveFullState(msrs []uint32) (*VCPUState, error) { return v.saveState(msrs, true) }

func (v *VCPU) saveState(msrs []uint32, full bool) (*VCPUState, error) {
	s := &VCPUState{parts: map[string][]byte{}, full: full}
	for _, p := range vcpuParts {
		b, err := v.getPart(p)
		if err != nil {
			if p.name == "regs" || p.name == "sregs" {
				return nil, fmt.Errorf("vcpu %d: saving %s: %w", v.ID, p.name, err)
			}
			continue // not on this host: recorded as absent
		}
		if p.name == "vcpu events" {
			// KVM_VCPUEVENT_VALID_NMI_PENDING | _SIPI_VECTOR (flags at
			// offset 20): the restore also sets (or clears) a pending NMI
			// and the SIPI vector.
			b[20] |= 0x3
		}
		s.parts[p.name] = b
	}
	list := slices.Clip(msrs)
	for _, idx := range mtrrMSRs() {
		if !slices.Contains(msrs, idx) {
			list = append(list, idx)
		}
	}
	for _, idx := range list {
		if idx == msrTSC && !full {
			continue
		}
		e := msrEntry{NMSRs: 1, Index: idx}
		if n, err := ioctlPtr(v.fd, ioctlGetMSRs, &e); err == nil && n == 1 {
			s.msrs = append(s.msrs, e)
		}
	}
	return s, nil
}

// getPart reads one part; the XSAVE area through KVM_GET_XSAVE2 when the
// host has it (its size is KVM_CAP_XSAVE2's answer), else KVM_GET_XSAVE.
func (v *VCPU) getPart(p vcpuPart) ([]byte, error) {
	size, get := p.size, p.get
	if p.name == "xsave" {
		size = xsaveLegacySize
		if n := v.vm.xsaveSize(); n > 0 {
			size, get = n, ioctlGetXSAVE2
		}
	}
	b := make([]byte, size)
	if _, err := bytesRetry(v.fd, get, b); err != nil {
		return nil, err
	}
	return b, nil
}

// xsaveSize is KVM_CAP_XSAVE2's answer on this VM, or 0 without it.
func (vm *VM) xsaveSize() int {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.xsave == 0 {
		vm.xsave = -1
		if n, err := ioctlRetry(vm.fd, ioctlCheckExtension, capXSAVE2); err == nil && n >= xsaveLegacySize && n <= maxXSAVE {
			vm.xsave = int(n)
		}
	}
	return max(vm.xsave, 0)
}

// RestoreState writes s back in restoreOrder. For a reset state, MSRs the
// host refuses to set are skipped (a few read-only ones are in KVM's
// list). For a full state (savevm), every part must be taken: a part this
// host lacks, an XSAVE area larger than it holds or an MSR it refuses with
// a value other than the one the vCPU already has fails the restore,
// naming what was lost.
func (v *VCPU) RestoreState(s *VCPUState) error {
	var errs []error
	for _, name := range restoreOrder {
		var err error
		switch name {
		case "msrs":
			err = v.restoreMSRs(s, func(idx uint32) bool { return idx != msrTSCDeadline })
		case "tsc deadline":
			err = v.restoreMSRs(s, func(idx uint32) bool { return idx == msrTSCDeadline })
		default:
			err = v.setPart(name, s.parts[name])
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (v *VCPU) setPart(name string, saved []byte) error {
	if saved == nil {
		return nil // absent on the saving host: the vCPU keeps its own
	}
	var p vcpuPart
	for _, q := range vcpuParts {
		if q.name == name {
			p = q
		}
	}
	// SET must not change the saved copy.
	data := append([]byte(nil), saved...)
	if name == "xsave" {
		n := max(v.vm.xsaveSize(), xsaveLegacySize)
		if len(data) > n && !isZero(data[n:]) {
			return fmt.Errorf("vcpu %d: restoring xsave: the saved area has state in its %d bytes past the %d this host holds", v.ID, len(data)-n, n)
		}
		// KVM_SET_XSAVE reads the vCPU's whole area (KVM_CAP_XSAVE2's
		// size): a smaller saved area is padded with zeroes (features
		// not in its XSTATE_BV stay in their initial state).
		data = append(data, make([]byte, max(n-len(data), 0))...)[:n]
	}
	if _, err := bytesRetry(v.fd, p.set, data); err != nil {
		return fmt.Errorf("vcpu %d: restoring %s: %w", v.ID, name, err)
	}
	return nil
}

// restoreMSRs writes the saved MSRs that pick selects, the TSC first (the
// TSC deadline and TSC_ADJUST count against it). A refused write is
// skipped for a reset state; for a full state it is an error unless the
// vCPU already holds the saved value (a read-only MSR).
func (v *VCPU) restoreMSRs(s *VCPUState, pick func(uint32) bool) error {
	var errs []error
	put := func(e msrEntry) {
		want := e.Data
		if n, err := ioctlPtr(v.fd, ioctlSetMSRs, &e); (err == nil && n == 1) || !s.full {
			return
		}
		cur := msrEntry{NMSRs: 1, Index: e.Index}
		if n, err := ioctlPtr(v.fd, ioctlGetMSRs, &cur); err == nil && n == 1 && cur.Data == want {
			return
		}
		errs = append(errs, fmt.Errorf("vcpu %d: restoring MSR %#x = %#x: refused by this host", v.ID, e.Index, want))
	}
	for _, e := range s.msrs {
		if e.Index == msrTSC && pick(e.Index) {
			put(e)
		}
	}
	for _, e := range s.msrs {
		if e.Index != msrTSC && pick(e.Index) {
			put(e)
		}
	}
	return errors.Join(errs...)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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
// The PIT blob is struct kvm_pit_state2: the three channels and its flags
// (HPET legacy mode, speaker data), all written back by KVM_SET_PIT2; a
// channel restarts counting from its saved count when it is restored.
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

// RestoreIRQChips writes s back (machine reset, loadvm). The IOAPIC
// re-raises its asserted input lines; one already delivered and awaiting
// EOI (remote IRR) is not delivered again.
func (vm *VM) RestoreIRQChips(s *IRQChipState) error {
	for i := range s.chips {
		c := s.chips[i]
		if _, err := ioctlPtr(vm.fd, ioctlSetIRQChip, &c); err != nil {
			return fmt.Errorf("restoring irqchip %d (%s): %w", i, irqChipNames[i], err)
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

// irqChipNames are the kvm_irqchip chip ids' parts, as named in a saved state.
var irqChipNames = [3]string{"pic master", "pic slave", "ioapic"}

// ClockState is the saved kvmclock: struct kvm_clock_data, whose first
// field is the clock in nanoseconds.
type ClockState struct {
	data    [48]byte
	present bool
}

// SaveClock reads the VM's kvmclock (KVM_GET_CLOCK). A host without
// KVM_CAP_ADJUST_CLOCK gives a state with the clock absent.
func (vm *VM) SaveClock() (*ClockState, error) {
	s := &ClockState{}
	if _, err := bytesRetry(vm.fd, ioctlGetClock, s.data[:]); err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return s, nil
		}
		return nil, fmt.Errorf("saving kvmclock: %w", err)
	}
	s.present = true
	return s, nil
}

// RestoreClock sets the VM's kvmclock to the saved value (KVM_SET_CLOCK)
// with no flags: the guest's clock resumes where it stopped, as QEMU does
// by default, rather than jumping by the time the state was stored
// (KVM_CLOCK_REALTIME would add it). Call it after every vCPU's
// RestoreState: it makes KVM rewrite each vCPU's kvmclock page, whose
// address is an MSR.
func (vm *VM) RestoreClock(s *ClockState) error {
	if !s.present {
		return nil
	}
	var d [48]byte
	copy(d[:8], s.data[:8])
	if _, err := bytesRetry(vm.fd, ioctlSetClock, d[:]); err != nil {
		return fmt.Errorf("restoring kvmclock: %w", err)
	}
	return nil
}

// Nanoseconds is the guest's kvmclock when it was saved (0 when absent).
func (s *ClockState) Nanoseconds() uint64 { return binary.LittleEndian.Uint64(s.data[:8]) }
