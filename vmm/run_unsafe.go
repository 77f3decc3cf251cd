package vmm

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kvmRunHeader mirrors the start of struct kvm_run (linux/kvm.h); the exit
// union follows at offset 32. Explicit padding keeps the kernel layout.
type kvmRunHeader struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IfFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	ApicBase                   uint64
}

const kvmRunUnionOffset = 32

// kvmRunIO mirrors kvm_run.io.
type kvmRunIO struct {
	Direction  uint8 // 0 in, 1 out
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64 // from the start of kvm_run
}

// kvmRunMMIO mirrors kvm_run.mmio.
type kvmRunMMIO struct {
	PhysAddr uint64
	Data     [8]uint8
	Len      uint32
	IsWrite  uint8
	_        [3]uint8
}

// kvmRunFailEntry mirrors kvm_run.fail_entry.
type kvmRunFailEntry struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
	_                          uint32
}

// kvmRunInternal mirrors kvm_run.internal.
type kvmRunInternal struct {
	Suberror uint32
	Ndata    uint32
	Data     [16]uint64
}

// kvmRunSystemEvent mirrors kvm_run.system_event.
type kvmRunSystemEvent struct {
	Type  uint32
	Ndata uint32
	Data  [16]uint64
}

// PaprHcall mirrors kvm_run.papr_hcall (KVM_EXIT_PAPR_HCALL): the machine
// reads Nr and Args and stores the result in Ret.
type PaprHcall struct {
	Nr   uint64
	Ret  uint64
	Args [9]uint64
}

// Compile-time layout checks against the kernel ABI.
var (
	_ [32 - unsafe.Sizeof(kvmRunHeader{})]struct{}
	_ [unsafe.Sizeof(kvmRunHeader{}) - 32]struct{}
	_ [16 - unsafe.Sizeof(kvmRunIO{})]struct{}
	_ [unsafe.Sizeof(kvmRunMMIO{}) - 24]struct{}
	_ [24 - unsafe.Sizeof(kvmRunMMIO{})]struct{}
)

// runView gives typed access to one vCPU's mmap'd kvm_run page in place.
type runView struct {
	mem []byte // the whole mapping (kvm_run plus the PIO data page)
}

func (r runView) header() *kvmRunHeader {
	return (*kvmRunHeader)(unsafe.Pointer(&r.mem[0]))
}

func (r runView) union() unsafe.Pointer {
	return unsafe.Pointer(&r.mem[kvmRunUnionOffset])
}

// immediateExitWord is kvm_run's first 32-bit word with only
// immediate_exit (byte 1) set, in the host's byte order: 1<<8 on x86 and
// ppc64le, 1<<16 on big-endian ppc64.
var immediateExitWord = binary.NativeEndian.Uint32([]byte{0, 1, 0, 0})

// setImmediateExit stores kvm_run.immediate_exit with a full barrier: it
// writes the first 32-bit word (request_interrupt_window, immediate_exit
// and padding; Petrel never requests an interrupt window) atomically, so
// a kicker's store and the vCPU thread's clear cannot be reordered around
// the request flags they publish (see VCPU.Run).
func (r runView) setImmediateExit(on bool) {
	var w uint32
	if on {
		w = immediateExitWord
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.mem[0])), w)
}

func (r runView) io() *kvmRunIO               { return (*kvmRunIO)(r.union()) }
func (r runView) mmio() *kvmRunMMIO           { return (*kvmRunMMIO)(r.union()) }
func (r runView) failEntry() *kvmRunFailEntry { return (*kvmRunFailEntry)(r.union()) }
func (r runView) internal() *kvmRunInternal   { return (*kvmRunInternal)(r.union()) }
func (r runView) systemEvent() *kvmRunSystemEvent {
	return (*kvmRunSystemEvent)(r.union())
}
func (r runView) papr() *PaprHcall { return (*PaprHcall)(r.union()) }

// ioctlPtr issues an ioctl whose argument is a pointer to v. The pointer
// is converted in the syscall expression itself, so v stays valid even if
// it lives on a goroutine stack that moves.
func ioctlPtr[T any](fd int, req uintptr, v *T) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(v)))
	if e != 0 {
		return r, e
	}
	return r, nil
}

// ioctlBytes issues an ioctl whose argument points at b[0].
func ioctlBytes(fd int, req uintptr, b []byte) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&b[0])))
	if e != 0 {
		return r, e
	}
	return r, nil
}

// bytesAddr returns the host address of b's first byte (b non-empty).
func bytesAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
