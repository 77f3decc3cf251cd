//go:build ppc64 || ppc64le

package pseries

import "unsafe"

// hostAddr is the host virtual address of b's first byte (for SDR1 under
// PR KVM, which reads the guest's hash table from user memory).
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
