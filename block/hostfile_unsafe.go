package block

import "unsafe"

// sliceAddr is the address of p's first byte, for O_DIRECT alignment checks.
func sliceAddr(p []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))
}
