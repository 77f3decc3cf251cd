package vmm

import (
	"errors"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeSys answers Open's ioctls from a table, as a host's /dev/kvm would.
type fakeSys struct {
	openErr error
	version uintptr
	caps    map[uintptr]uintptr
	closed  []int
}

const fakeFD = 42

func (f *fakeSys) Open(string) (int, error) { return fakeFD, f.openErr }
func (f *fakeSys) Close(fd int) error       { f.closed = append(f.closed, fd); return nil }
func (f *fakeSys) Ioctl(fd int, req, arg uintptr) (uintptr, error) {
	if fd != fakeFD {
		return 0, unix.EBADF
	}
	switch req {
	case ioctlGetAPIVersion:
		return f.version, nil
	case ioctlCheckExtension:
		return f.caps[arg], nil
	case ioctlGetVCPUMmapSize:
		return 12288, nil
	}
	return 0, unix.ENOTTY
}

func allCaps() *fakeSys {
	f := &fakeSys{version: kvmAPIVersion, caps: map[uintptr]uintptr{}}
	for _, c := range requiredCaps {
		f.caps[c.id] = 1
	}
	return f
}

func TestOpenChecksCapabilities(t *testing.T) {
	k, err := openWith(allCaps(), "/dev/kvm")
	if err != nil || k.mmapSize != 12288 || k.fd != fakeFD {
		t.Fatalf("open with every capability: %+v, %v", k, err)
	}
	if len(requiredCaps) < 2 || requiredCaps[1].name != "KVM_CAP_IMMEDIATE_EXIT" {
		t.Fatalf("required capabilities %v lack KVM_CAP_IMMEDIATE_EXIT", requiredCaps)
	}
	for _, c := range requiredCaps {
		f := allCaps()
		delete(f.caps, c.id)
		_, err := openWith(f, "/dev/kvm")
		if !errors.Is(err, ErrMissingCapability) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("without %s: %v", c.name, err)
		}
		if len(f.closed) != 1 {
			t.Errorf("without %s: /dev/kvm closed %d times", c.name, len(f.closed))
		}
	}
}

func TestOpenErrors(t *testing.T) {
	f := allCaps()
	f.version = 11
	if _, err := openWith(f, "/dev/kvm"); err == nil || !strings.Contains(err.Error(), "api version 11") {
		t.Fatalf("old api: %v", err)
	}
	f = allCaps()
	f.openErr = unix.ENOENT
	if _, err := openWith(f, "/dev/kvm"); !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "/dev/kvm") {
		t.Fatalf("no /dev/kvm: %v", err)
	}
}

// Guest RAM starts on a 2 MiB boundary (so KVM can map it with 2 MiB
// entries), is zero, writable to its last byte, and unmaps.
func TestAllocGuestRAMAligned(t *testing.T) {
	for _, size := range []uint64{4096, 2 << 20, 3<<20 + 4096, 64 << 20} {
		b, err := AllocGuestRAM(size)
		if err != nil {
			t.Fatal(err)
		}
		if a := uintptr(unsafe.Pointer(&b[0])); a%hugePage != 0 || uint64(len(b)) != size {
			t.Fatalf("size %#x: at %#x, %d bytes; want 2 MiB aligned, %d bytes", size, a, len(b), size)
		}
		if b[0] != 0 || b[size-1] != 0 {
			t.Fatal("fresh guest RAM is not zero")
		}
		b[size-1] = 1
		if err := FreeGuestRAM(b); err != nil {
			t.Fatal(err)
		}
	}
}
