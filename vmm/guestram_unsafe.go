package vmm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the 2 MiB page of x86-64 and of POWER's radix MMU.
const hugePage = 2 << 20

// AllocGuestRAM maps size bytes of anonymous, lazily allocated memory
// (MAP_NORESERVE: pages cost nothing until the guest touches them),
// starting on a 2 MiB boundary, as QEMU places guest RAM.
//
// The alignment is what lets a host whose transparent huge pages are
// "always" (Debian's kernels) back a 2 MiB range of guest RAM with one huge
// page, and KVM map it into the guest with one 2 MiB entry: KVM can only
// do that where guest-physical and host-virtual addresses agree modulo
// 2 MiB. Unaligned, every 4 KiB page the guest touches costs its own
// nested page fault (nested to /init: ~20k exits against QEMU's ~7k).
//
// The memory is not marked MADV_HUGEPAGE (QEMU does that): with the
// kernel's default THP defrag setting ("madvise") a fault in a madvised
// range compacts memory synchronously, and with it the nested tier's L1
// (QEMU TCG emulating SVM) stalled for minutes. Without it a huge page is
// used when one is free and a 4 KiB page otherwise, at once.
func AllocGuestRAM(size uint64) ([]byte, error) {
	if size == 0 || size&0xfff != 0 || size > 1<<46 {
		return nil, fmt.Errorf("guest ram size %#x: not a page multiple in range", size)
	}
	// Map one huge page more than asked, then unmap the part before the
	// first 2 MiB boundary and the part beyond size.
	span := uintptr(size) + hugePage
	p, err := unix.MmapPtr(-1, 0, nil, span, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d MiB of guest ram: %w", size>>20, err)
	}
	head := (hugePage - uintptr(p)%hugePage) % hugePage
	tail := span - head - uintptr(size)
	start := unsafe.Add(p, head)
	if head > 0 {
		if err := unix.MunmapPtr(p, head); err != nil {
			unix.MunmapPtr(p, span)
			return nil, fmt.Errorf("aligning guest ram: %w", err)
		}
	}
	if tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(start, uintptr(size)), tail); err != nil {
			unix.MunmapPtr(start, uintptr(size))
			return nil, fmt.Errorf("aligning guest ram: %w", err)
		}
	}
	return unsafe.Slice((*byte)(start), size), nil
}

// FreeGuestRAM unmaps memory from AllocGuestRAM.
func FreeGuestRAM(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.MunmapPtr(unsafe.Pointer(&b[0]), uintptr(len(b)))
}
