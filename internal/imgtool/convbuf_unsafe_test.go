package imgtool

import (
	"testing"
	"unsafe"
)

// TestConvertBuffers: each worker's buffer is its own (writing one changes
// no other), of the asked size and capacity, and huge-page aligned.
func TestConvertBuffers(t *testing.T) {
	const n, size = 3, 2 * hugeAlign
	bufs, unmap := convertBuffers(n, size)
	defer unmap()
	if len(bufs) != n {
		t.Fatalf("%d buffers, want %d", len(bufs), n)
	}
	for i, b := range bufs {
		if len(b) != size || cap(b) != size {
			t.Fatalf("buffer %d: len %d cap %d, want %d", i, len(b), cap(b), size)
		}
		if a := uintptr(unsafe.Pointer(unsafe.SliceData(b))); a%hugeAlign != 0 {
			t.Errorf("buffer %d at %#x: not aligned to %#x", i, a, hugeAlign)
		}
		for j := range b {
			b[j] = byte(i + 1)
		}
	}
	for i, b := range bufs {
		for _, j := range []int{0, size / 2, size - 1} {
			if b[j] != byte(i+1) {
				t.Fatalf("buffer %d byte %d is %d: another buffer overlaps it", i, j, b[j])
			}
		}
	}
}
