package qcow2

import "testing"

// FuzzBitmapDirectoryMeasure: any directory bytes, bitmap count, disk size
// and cluster size give an error or a whole number of clusters, never a
// panic or an allocation.
func FuzzBitmapDirectoryMeasure(f *testing.F) {
	f.Fuzz(func(t *testing.T, dir []byte, nb uint32, diskSize int64, clusterBits uint8) {
		if diskSize < 0 || clusterBits < minClusterBits || clusterBits > maxClusterBits {
			return
		}
		cs := int64(1) << clusterBits
		n, err := bitmapDirectoryMeasure(dir, nb, diskSize, cs)
		if err != nil {
			return
		}
		if n < 0 || n%cs != 0 {
			t.Fatalf("bitmaps size %d for %d-byte clusters", n, cs)
		}
		if nb == 0 && n != 0 {
			t.Fatalf("no bitmaps measure %d bytes", n)
		}
	})
}

// TestPreallocatedSizeFigures pins the fully allocated sizes qemu-img 7.2
// measure prints (iotest 178's new-file cases, 64 KiB clusters, 16-bit
// refcounts) so a change to the arithmetic shows without qemu-img.
func TestPreallocatedSizeFigures(t *testing.T) {
	for _, c := range []struct{ virtual, want uint64 }{
		{0, 196608},
		{2 << 30, 2148073472},
		{64 << 30, 68730224640},
		{256 << 30, 274920112128},
		{1 << 40, 1099679662080},
		{2 << 50, 2252143463694336},
	} {
		if got := preallocatedSize(c.virtual, 64<<10, 4, 8); got != c.want {
			t.Errorf("preallocatedSize(%d) = %d, want %d", c.virtual, got, c.want)
		}
	}
}
