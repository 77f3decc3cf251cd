package vmm

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// vmm owns the KVM ABI: every ioctl number and argument structure it uses
// is defined here and in the per-architecture files (kvm_amd64.go,
// kvm_ppc64x.go), with tests against the values the kernel headers give
// (docs/ARCHITECTURE.md, "The KVM boundary").
const kvmIO = 0xAE

// ioc encodes an ioctl number (include/uapi/asm-generic/ioctl.h; POWER
// has its own direction bits and shift, see ioc_*.go).
func ioc(dir, nr, size uintptr) uintptr {
	return dir<<iocDirShift | size<<16 | kvmIO<<8 | nr
}

// The ioctls every architecture uses (linux/kvm.h).
var (
	ioctlGetAPIVersion       = ioc(iocNone, 0x00, 0)
	ioctlCreateVM            = ioc(iocNone, 0x01, 0)
	ioctlCheckExtension      = ioc(iocNone, 0x03, 0)
	ioctlGetVCPUMmapSize     = ioc(iocNone, 0x04, 0)
	ioctlCreateVCPU          = ioc(iocNone, 0x41, 0)
	ioctlSetUserMemoryRegion = ioc(iocWrite, 0x46, 32)
	ioctlIRQLine             = ioc(iocWrite, 0x61, 8)
	ioctlIrqfd               = ioc(iocWrite, 0x76, 32)
	ioctlIoeventfd           = ioc(iocWrite, 0x79, 64)
	ioctlSignalMSI           = ioc(iocWrite, 0xa5, 32)
	ioctlRun                 = ioc(iocNone, 0x80, 0)
)

// kvmAPIVersion is the only KVM_GET_API_VERSION there has ever been.
const kvmAPIVersion = 12

// The capabilities (KVM_CAP_*, linux/kvm.h) every architecture relies on;
// requiredCaps (kvm_*.go) lists all the ones Open checks.
const (
	capUserMemory    = 3
	capImmediateExit = 136
)

// commonCaps are the capabilities the shared code needs: memory slots,
// and immediate_exit, on which the kick protocol (VCPU.Run) rests.
var commonCaps = []capability{
	{capUserMemory, "KVM_CAP_USER_MEMORY", "guest memory slots"},
	{capImmediateExit, "KVM_CAP_IMMEDIATE_EXIT", "kicking a vCPU out of KVM_RUN without losing the kick"},
}

// capability names a KVM_CAP_* value for error messages.
type capability struct {
	id   uintptr
	name string
	why  string // what vmm uses it for
}

// sysCalls is the part of the kernel Open talks to, behind an interface
// so the version and capability checks are tested without /dev/kvm
// (kvm_test.go); hostSys is the real one.
type sysCalls interface {
	Open(path string) (int, error)
	Ioctl(fd int, req, arg uintptr) (uintptr, error)
	Close(fd int) error
}

type hostSys struct{}

func (hostSys) Open(path string) (int, error) {
	return unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
}
func (hostSys) Ioctl(fd int, req, arg uintptr) (uintptr, error) { return ioctl(fd, req, arg) }
func (hostSys) Close(fd int) error                              { return unix.Close(fd) }

// KVM is an open /dev/kvm.
type KVM struct {
	fd       int
	mmapSize int
	// PVM reports that the host hypervisor is kvm_pvm (software
	// virtualization: some CPL0 instructions cannot be executed).
	PVM bool
}

// ErrMissingCapability is wrapped by Open when the host's KVM lacks a
// capability vmm relies on.
var ErrMissingCapability = errors.New("kvm lacks a required capability")

// Open opens /dev/kvm, checks the API version and every capability in
// requiredCaps, and reads the kvm_run mapping size.
func Open() (*KVM, error) {
	k, err := openWith(hostSys{}, "/dev/kvm")
	if err != nil {
		return nil, err
	}
	k.PVM = DetectPVM()
	return k, nil
}

func openWith(s sysCalls, path string) (*KVM, error) {
	fd, err := s.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := checkKVM(s, fd); err != nil {
		s.Close(fd)
		return nil, err
	}
	n, err := s.Ioctl(fd, ioctlGetVCPUMmapSize, 0)
	if err != nil {
		s.Close(fd)
		return nil, fmt.Errorf("getting kvm_run mmap size: %w", err)
	}
	return &KVM{fd: fd, mmapSize: int(n)}, nil
}

// checkKVM checks the API version and the required capabilities, naming
// the first one missing.
func checkKVM(s sysCalls, fd int) error {
	v, err := s.Ioctl(fd, ioctlGetAPIVersion, 0)
	if err != nil {
		return fmt.Errorf("reading kvm api version: %w", err)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("kvm api version %d, want %d", v, kvmAPIVersion)
	}
	for _, c := range requiredCaps {
		// KVM_CHECK_EXTENSION answers 0 for "no" (and a few
		// capabilities answer a count): an error is a no as well.
		if n, err := s.Ioctl(fd, ioctlCheckExtension, c.id); err != nil || n == 0 {
			return fmt.Errorf("%w: %s (%d), needed for %s", ErrMissingCapability, c.name, c.id, c.why)
		}
	}
	return nil
}

// Close closes /dev/kvm (VMs stay valid).
func (k *KVM) Close() error { return unix.Close(k.fd) }

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
