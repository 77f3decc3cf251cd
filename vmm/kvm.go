package vmm

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// KVM ioctl numbers (linux/kvm.h). The _IO/_IOW encodings are spelled out
// so that the structure sizes they carry can be checked against the Go
// structs (layout_unsafe_test.go).
const kvmIO = 0xAE

// ioc encodes an ioctl number (asm-generic/ioctl.h; the direction bits
// differ on POWER, see ioc_*.go).
func ioc(dir, nr, size uintptr) uintptr {
	return dir<<iocDirShift | size<<16 | kvmIO<<8 | nr
}

var (
	ioctlGetAPIVersion       = ioc(iocNone, 0x00, 0)
	ioctlCreateVM            = ioc(iocNone, 0x01, 0)
	ioctlCheckExtension      = ioc(iocNone, 0x03, 0)
	ioctlGetVCPUMmapSize     = ioc(iocNone, 0x04, 0)
	ioctlGetSupportedCPUID   = ioc(iocRead|iocWrite, 0x05, 8)
	ioctlCreateVCPU          = ioc(iocNone, 0x41, 0)
	ioctlSetUserMemoryRegion = ioc(iocWrite, 0x46, 32)
	ioctlSetTSSAddr          = ioc(iocNone, 0x47, 0)
	ioctlSetIdentityMapAddr  = ioc(iocWrite, 0x48, 8)
	ioctlCreateIRQChip       = ioc(iocNone, 0x60, 0)
	ioctlIRQLine             = ioc(iocWrite, 0x61, 8)
	ioctlSetGSIRouting       = ioc(iocWrite, 0x6a, 8)
	ioctlIrqfd               = ioc(iocWrite, 0x76, 32)
	ioctlCreatePIT2          = ioc(iocWrite, 0x77, 64)
	ioctlIoeventfd           = ioc(iocWrite, 0x79, 64)
	ioctlEnableCap           = ioc(iocWrite, 0xa3, 104)
	ioctlSignalMSI           = ioc(iocWrite, 0xa5, 32)
	ioctlRun                 = ioc(iocNone, 0x80, 0)
	ioctlGetRegs             = ioc(iocRead, 0x81, 144)
	ioctlSetRegs             = ioc(iocWrite, 0x82, 144)
	ioctlGetSregs            = ioc(iocRead, 0x83, 312)
	ioctlSetSregs            = ioc(iocWrite, 0x84, 312)
	ioctlSetMSRs             = ioc(iocWrite, 0x89, 8)
	ioctlSetCPUID2           = ioc(iocWrite, 0x90, 8)
	ioctlGetCPUID2           = ioc(iocRead|iocWrite, 0x91, 8)
	ioctlGetFPU              = ioc(iocRead, 0x8c, 416)
	ioctlSetFPU              = ioc(iocWrite, 0x8d, 416)
)

// KVM capabilities used by Petrel (KVM_CAP_*).
const (
	CapIRQChip       = 0
	CapUserMemory    = 3
	CapSetTSSAddr    = 4
	CapIRQRouting    = 25
	CapIRQFD         = 32
	CapPIT2          = 33
	CapIoeventfd     = 36
	CapSignalMSI     = 77
	CapImmediateExit = 136
	CapNrMemslots    = 10
)

// KVM is an open /dev/kvm.
type KVM struct {
	fd       int
	mmapSize int
	// PVM reports that the host hypervisor is kvm_pvm (software
	// virtualization: some CPL0 instructions cannot be executed).
	PVM bool
}

// Open opens /dev/kvm and checks the API version.
func Open() (*KVM, error) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/kvm: %w", err)
	}
	k := &KVM{fd: fd, PVM: DetectPVM()}
	v, err := ioctl(fd, ioctlGetAPIVersion, 0)
	if err != nil || v != 12 {
		unix.Close(fd)
		return nil, fmt.Errorf("kvm api version %d (want 12): %v", v, err)
	}
	n, err := ioctl(fd, ioctlGetVCPUMmapSize, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("getting kvm_run mmap size: %w", err)
	}
	k.mmapSize = int(n)
	return k, nil
}

// Close closes /dev/kvm (VMs stay valid).
func (k *KVM) Close() error { return unix.Close(k.fd) }

// CheckExtension returns KVM_CHECK_EXTENSION for cap (0 = unsupported).
func (k *KVM) CheckExtension(cap int) int {
	v, err := ioctl(k.fd, ioctlCheckExtension, uintptr(cap))
	if err != nil {
		return 0
	}
	return int(v)
}

// DetectPVM reports whether the host runs the kvm_pvm module.
func DetectPVM() bool {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return true
	}
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "kvm_pvm ") {
			return true
		}
	}
	return false
}

// ioctl issues an ioctl and returns its result; EINTR is returned, not retried.
func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

// ioctlRetry retries setup ioctls interrupted by Go's own signals
// (preemption): they are not kicks, and setup happens before vCPUs run.
func ioctlRetry(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, err := ioctl(fd, req, arg)
		if !errors.Is(err, unix.EINTR) {
			return r, err
		}
	}
}
