package vmm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the x86-64 (and POWER radix) 2 MiB page: guest RAM starts on
// such a boundary so that the host can back it with transparent huge pages
// and KVM can map it to the guest with 2 MiB entries. Unaligned RAM costs
// a 4 KiB mapping, and a nested page fault, per page the guest touches.
const hugePage = 2 << 20

// AllocGuestRAM maps size bytes of anonymous, lazily allocated memory
// (MAP_NORESERVE: pages cost nothing until the guest touches them),
// starting on a 2 MiB boundary and marked MADV_HUGEPAGE (honoured where
// the host's transparent huge pages are "madvise" or "always"; a host
// without them keeps 4 KiB pages).
func AllocGuestRAM(size uint64) ([]byte, error) {
	if size == 0 || size&0xfff != 0 || size > 1<<46 {
		return nil, fmt.Errorf("guest ram size %#x: not a page multiple in range", size)
	}
	// Map a huge page more than asked, then give back the unaligned head
	// and the tail beyond size.
	span := uintptr(size) + hugePage
	p, err := unix.MmapPtr(-1, 0, nil, span, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d MiB of guest ram: %w", size>>20, err)
	}
	head := (hugePage - uintptr(p)%hugePage) % hugePage
	if head > 0 {
		if err := unix.MunmapPtr(p, head); err != nil {
			unix.MunmapPtr(p, span)
			return nil, fmt.Errorf("aligning guest ram: %w", err)
		}
	}
	start := unsafe.Add(p, head)
	if tail := span - head - uintptr(size); tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(start, uintptr(size)), tail); err != nil {
			unix.MunmapPtr(start, uintptr(size))
			return nil, fmt.Errorf("aligning guest ram: %w", err)
		}
	}
	b := unsafe.Slice((*byte)(start), size)
	// Best effort: EINVAL where the kernel has no transparent huge pages.
	unix.Madvise(b, unix.MADV_HUGEPAGE)
	return b, nil
}

// FreeGuestRAM unmaps memory from AllocGuestRAM.
func FreeGuestRAM(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.MunmapPtr(unsafe.Pointer(&b[0]), uintptr(len(b)))
}
