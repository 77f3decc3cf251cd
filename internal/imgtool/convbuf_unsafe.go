package imgtool

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugeAlign is the size and alignment of a transparent huge page on the
// hosts Petrel runs on (x86-64, and ppc64 with a radix MMU).
const hugeAlign = 2 << 20

// convertBuffers returns n buffers of size bytes (a multiple of
// hugeAlign) from one anonymous mapping, aligned to hugeAlign and
// advised as huge pages, and the function that unmaps them. The first
// read into a 4 KiB-paged buffer takes a page fault per 4 KiB (4096 for
// 8 workers' 2 MiB, a quarter of convert's CPU time on a guest where a
// fault is a hypervisor exit); huge pages take one per 2 MiB. Where the
// kernel has none to give, or mmap fails, the buffers are ordinary
// ones: only the speed differs.
func convertBuffers(n, size int) ([][]byte, func()) {
	bufs := make([][]byte, n)
	m, err := unix.Mmap(-1, 0, n*size+hugeAlign, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		for i := range bufs {
			bufs[i] = make([]byte, size)
		}
		return bufs, func() {}
	}
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(m))) & (hugeAlign - 1))
	region := m[skip : skip+n*size]
	unix.Madvise(region, unix.MADV_HUGEPAGE) // advice: nothing to do if refused
	for i := range bufs {
		bufs[i] = region[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs, func() { unix.Munmap(m) }
}
