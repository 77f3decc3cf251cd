//go:build amd64

package pc

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore fills vec with the residency of each page of b (mincore(2));
// b is an mmap'd region, so its address is stable.
func mincore(b, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
