package virtio

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Guest-shared 16-bit ring fields are accessed through the aligned 32-bit
// word that holds them, because sync/atomic has no 16-bit operations. The
// word is converted with the host's byte order and the field read as the
// little-endian value the guest stored.

func aligned4(b []byte) bool {
	return len(b) >= 4 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 == 0
}

func wordAt(b []byte, off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&b[off&^3]))
}

// load16 atomically loads the little-endian 16-bit field at b[off]; b is
// 4-byte aligned and off even.
func (q *Queue) load16(b []byte, off int) uint16 {
	var w [4]byte
	binary.NativeEndian.PutUint32(w[:], atomic.LoadUint32(wordAt(b, off)))
	return binary.LittleEndian.Uint16(w[off&2:])
}

// store16 atomically stores v at b[off], leaving the other half of the word
// as the guest last wrote it (compare-and-swap loop).
func (q *Queue) store16(b []byte, off int, v uint16) {
	p := wordAt(b, off)
	for {
		old := atomic.LoadUint32(p)
		var w [4]byte
		binary.NativeEndian.PutUint32(w[:], old)
		binary.LittleEndian.PutUint16(w[off&2:], v)
		if atomic.CompareAndSwapUint32(p, old, binary.NativeEndian.Uint32(w[:])) {
			return
		}
	}
}
