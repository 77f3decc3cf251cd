package virtiotest

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// load16 and store16 access a ring index the device reads concurrently,
// through the aligned 32-bit word holding it (as devices/virtio does).
func load16(ram []byte, gpa uint64) uint16 {
	var w [4]byte
	binary.NativeEndian.PutUint32(w[:], atomic.LoadUint32((*uint32)(unsafe.Pointer(&ram[gpa&^3]))))
	return binary.LittleEndian.Uint16(w[gpa&2:])
}

// store16 replaces the 16 bits at gpa with a compare-and-swap loop on the
// whole word, so that the device's concurrent writes to the other half of
// the word are not lost. gpa must be 2-aligned (ring indices are).
func store16(ram []byte, gpa uint64, v uint16) {
	p := (*uint32)(unsafe.Pointer(&ram[gpa&^3]))
	for {
		old := atomic.LoadUint32(p)
		var w [4]byte
		binary.NativeEndian.PutUint32(w[:], old)
		binary.LittleEndian.PutUint16(w[gpa&2:], v)
		if atomic.CompareAndSwapUint32(p, old, binary.NativeEndian.Uint32(w[:])) {
			return
		}
	}
}
