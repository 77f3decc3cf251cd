package qcow2

import (
	"errors"
	"fmt"
	"math/bits"
)

// Bitmap contents in memory and the operations of qemu-img bitmap. Bit i
// of a bitmap covers guest bytes [i*granularity, (i+1)*granularity); it is
// bit i%8 of byte i/8 of the data (spec "Bitmap table": the data is the
// bitmap serialized least significant bit first), cut into clusters.

// BitmapInfo describes a persistent bitmap as qemu-img info shows it.
type BitmapInfo struct {
	Name        string
	Granularity int64
	Enabled     bool // the auto flag: the bitmap tracks writes
	InUse       bool // inconsistent: not saved properly, contents unknown
}

// Extent is a guest byte range [Off, Off+Len).
type Extent struct{ Off, Len int64 }

// onesChunk stands for a data cluster that reads as all ones (a table
// entry with bit 0 set and no offset): one byte, where a real chunk holds
// a whole cluster, so that such entries cost no memory.
var onesChunk = []byte{0xff}

func isOnesChunk(c []byte) bool { return len(c) == 1 }

// chunkBytes returns chunk c as chunkBits/8 bytes (a fresh copy of an
// all-ones stand-in).
func chunkBytes(c []byte, chunkBits uint64) []byte {
	if !isOnesChunk(c) {
		return c
	}
	full := make([]byte, chunkBits/8)
	for i := range full {
		full[i] = 0xff
	}
	return full
}

// setBits sets bits [from, to) of the bitmap, allocating a chunk where it
// writes; a chunk all of whose bits are set becomes (or stays) the
// all-ones stand-in.
func (b *dirtyBitmap) setBits(from, to uint64, chunkBits uint64) {
	for from < to {
		ci := from / chunkBits
		end := min(to, (ci+1)*chunkBits)
		for uint64(len(b.chunks)) <= ci {
			b.chunks = append(b.chunks, nil)
		}
		c := b.chunks[ci]
		if isOnesChunk(c) || end-from == chunkBits {
			b.chunks[ci] = onesChunk // the whole chunk set: no memory
			from = end
			continue
		}
		if c == nil {
			c = make([]byte, chunkBits/8)
			b.chunks[ci] = c
		}
		lo, hi := from-ci*chunkBits, end-ci*chunkBits
		for lo < hi {
			if lo%8 == 0 && hi-lo >= 8 {
				c[lo/8] = 0xff
				lo += 8
				continue
			}
			c[lo/8] |= 1 << (lo % 8)
			lo++
		}
		from = end
	}
}

// clearBeyond zeroes the bits from n on (after a shrink, or stray bits in
// a loaded last cluster) and drops chunks wholly beyond.
func (b *dirtyBitmap) clearBeyond(n, chunkBits uint64) {
	keep := (n + chunkBits - 1) / chunkBits
	if uint64(len(b.chunks)) > keep {
		b.chunks = b.chunks[:keep]
	}
	if n%chunkBits == 0 || uint64(len(b.chunks)) < keep || b.chunks[keep-1] == nil {
		return
	}
	last := append([]byte(nil), chunkBytes(b.chunks[keep-1], chunkBits)...)
	for i := n % chunkBits; i < chunkBits; i++ {
		last[i/8] &^= 1 << (i % 8)
	}
	b.chunks[keep-1] = last
}

// extents lists the guest ranges whose bits are set, clipped to size.
// Runs of set bits are added whole (an all-ones chunk, a 0xff byte), so
// the time follows the dirty data, not the number of granules.
func (b *dirtyBitmap) extents(size int64, chunkBits uint64) []Extent {
	var out []Extent
	gran := uint64(1) << b.granBits
	add := func(bit, count uint64) {
		off := bit * gran
		if off >= uint64(size) {
			return
		}
		n := int64(min(count*gran, uint64(size)-off))
		if k := len(out) - 1; k >= 0 && out[k].Off+out[k].Len == int64(off) {
			out[k].Len += n
			return
		}
		out = append(out, Extent{int64(off), n})
	}
	for ci, c := range b.chunks {
		base := uint64(ci) * chunkBits
		switch {
		case c == nil:
			continue
		case isOnesChunk(c):
			add(base, chunkBits)
			continue
		}
		for i, v := range c {
			if v == 0xff {
				add(base+uint64(i)*8, 8)
				continue
			}
			for v != 0 {
				j := bits.TrailingZeros8(v)
				add(base+uint64(i)*8+uint64(j), 1)
				v &^= 1 << j
			}
		}
	}
	return out
}

// markBitmaps sets the bits covering guest bytes [off, off+n) in every
// enabled, consistent bitmap. Safe for concurrent writers (bmMu).
func (img *Image) markBitmaps(off, n int64) {
	if !img.bitmapsLive.Load() || n <= 0 {
		return
	}
	img.bmMu.Lock()
	defer img.bmMu.Unlock()
	for _, b := range img.bitmaps {
		if b.inconsistent || !b.enabled() {
			continue
		}
		g := uint64(b.granBits)
		b.setBits(uint64(off)>>g, (uint64(off+n)+1<<g-1)>>g, uint64(img.clusterSize)*8)
	}
}

// Bitmaps lists the image's persistent bitmaps in directory order.
func (img *Image) Bitmaps() []BitmapInfo {
	img.mu.Lock()
	defer img.mu.Unlock()
	var out []BitmapInfo
	for _, b := range img.bitmaps {
		out = append(out, BitmapInfo{Name: b.name, Granularity: 1 << b.granBits, Enabled: b.enabled(), InUse: b.inconsistent})
	}
	return out
}

// BitmapError is why the bitmap directory could not be read (nil when it
// was read, or there is none).
func (img *Image) BitmapError() error { return img.bitmapErr }

// PersistentBitmaps counts the image's bitmaps.
func (img *Image) PersistentBitmaps() int {
	img.mu.Lock()
	defer img.mu.Unlock()
	return len(img.bitmaps)
}

// findBitmap returns the bitmap called name, with QEMU's message when
// there is none. Caller holds mu.
func (img *Image) findBitmap(name string) (*dirtyBitmap, error) {
	for _, b := range img.bitmaps {
		if b.name == name {
			return b, nil
		}
	}
	return nil, fmt.Errorf("Dirty bitmap '%s' not found", name)
}

// usableBitmap is findBitmap refusing an inconsistent bitmap, in QEMU's
// words (bdrv_dirty_bitmap_check).
func (img *Image) usableBitmap(name string) (*dirtyBitmap, error) {
	b, err := img.findBitmap(name)
	if err != nil {
		return nil, err
	}
	if b.inconsistent {
		return nil, fmt.Errorf("Bitmap '%s' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk", name)
	}
	return b, img.loadBitmapData(b)
}

// bitmapChange runs fn on a writable image under mu and bmMu; the
// bitmaps are stored on Close.
func (img *Image) bitmapChange(fn func() error) error {
	if err := img.writable(); err != nil {
		return err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.bitmapErr != nil {
		return img.bitmapErr
	}
	img.bmMu.Lock()
	defer img.bmMu.Unlock()
	if err := fn(); err != nil {
		return err
	}
	img.bitmapsTracked = true
	img.bitmapsLive.Store(true)
	return nil
}

// AddBitmap creates an empty persistent bitmap (qemu-img bitmap --add);
// granularity 0 picks QEMU's default (the cluster size, clamped to 4 KiB
// to 64 KiB).
func (img *Image) AddBitmap(name string, granularity int64, enabled bool) error {
	if granularity == 0 {
		granularity = min(max(img.clusterSize, 4096), 65536)
	}
	return img.bitmapChange(func() error {
		if granularity < 1<<minBitmapGranBits || granularity > 1<<maxBitmapGranBits || granularity&(granularity-1) != 0 {
			return errors.New("Granularity must be power of 2 and at least 512")
		}
		if _, err := img.findBitmap(name); err == nil {
			return fmt.Errorf("Bitmap already exists: %s", name)
		}
		if img.hdr.version < 3 {
			return fmt.Errorf("Can't make bitmap '%s' persistent in '%s': Cannot store dirty bitmaps in qcow2 v2 files", name, img.path)
		}
		if len(name) > maxBitmapNameSize {
			return fmt.Errorf("Can't make bitmap '%s' persistent in '%s': Name length exceeds maximum (%d)", name, img.path, maxBitmapNameSize)
		}
		if bitmapTooLarge(img.hdr.size, uint8(bits.TrailingZeros64(uint64(granularity)))) {
			return fmt.Errorf("Can't make bitmap '%s' persistent in '%s': %v", name, img.path, errBitmapTooLarge)
		}
		if len(img.bitmaps) >= maxBitmaps {
			return fmt.Errorf("Can't make bitmap '%s' persistent in '%s': Maximum number of persistent bitmaps is already reached", name, img.path)
		}
		b := &dirtyBitmap{bitmapEntry: bitmapEntry{name: name, granBits: uint8(bits.TrailingZeros64(uint64(granularity)))}, loaded: true}
		if enabled {
			b.flags = bitmapFlagAuto
		}
		img.bitmaps = append(img.bitmaps, b)
		return nil
	})
}

// RemoveBitmap deletes a bitmap, inconsistent ones included; its clusters
// are freed when the bitmaps are stored.
func (img *Image) RemoveBitmap(name string) error {
	return img.bitmapChange(func() error {
		b, err := img.findBitmap(name)
		if err != nil {
			return err
		}
		for i := range img.bitmaps {
			if img.bitmaps[i] == b {
				img.bitmaps = append(img.bitmaps[:i:i], img.bitmaps[i+1:]...)
				break
			}
		}
		if b.tableOff != 0 {
			img.removedBitmaps = append(img.removedBitmaps, b.bitmapEntry)
		}
		return nil
	})
}

// ClearBitmap resets every bit.
func (img *Image) ClearBitmap(name string) error {
	return img.bitmapChange(func() error {
		b, err := img.usableBitmap(name)
		if err == nil {
			b.chunks = nil
		}
		return err
	})
}

// EnableBitmap sets or clears the auto flag.
func (img *Image) EnableBitmap(name string, enabled bool) error {
	return img.bitmapChange(func() error {
		b, err := img.usableBitmap(name)
		if err != nil {
			return err
		}
		b.flags &^= bitmapFlagAuto
		if enabled {
			b.flags |= bitmapFlagAuto
		}
		return nil
	})
}

// BitmapExtents lists the guest ranges a consistent bitmap marks dirty
// (a merge source, or convert --bitmaps copying it).
func (img *Image) BitmapExtents(name string) ([]Extent, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.bitmapErr != nil {
		return nil, img.bitmapErr
	}
	b, err := img.usableBitmap(name)
	if err != nil {
		return nil, err
	}
	img.bmMu.Lock()
	defer img.bmMu.Unlock()
	return b.extents(int64(img.hdr.size), uint64(img.clusterSize)*8), nil
}

// MergeBitmap sets the bits of name covering each extent (qemu-img bitmap
// --merge: the union with the source's dirty ranges, whatever the two
// granularities).
func (img *Image) MergeBitmap(name string, extents []Extent) error {
	return img.bitmapChange(func() error {
		b, err := img.usableBitmap(name)
		if err != nil {
			return err
		}
		g := uint64(b.granBits)
		size := img.hdr.size
		for _, e := range extents {
			end := min(uint64(e.Off+e.Len), size)
			if uint64(e.Off) >= end {
				continue
			}
			b.setBits(uint64(e.Off)>>g, (end+1<<g-1)>>g, uint64(img.clusterSize)*8)
		}
		return nil
	})
}

// checkBitmapsResize refuses a size some bitmap could not cover (QEMU
// would fail to store it).
func (img *Image) checkBitmapsResize(newSize int64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	for _, b := range img.bitmaps {
		if bitmapTooLarge(uint64(newSize), b.granBits) {
			return fmt.Errorf("Cannot resize: bitmap '%s': %v", b.name, errBitmapTooLarge)
		}
	}
	return nil
}

// resizeBitmaps drops the bits beyond a new, smaller size (growing needs
// nothing: new bits read as zeroes). Caller holds mu.
func (img *Image) resizeBitmaps() {
	img.bmMu.Lock()
	defer img.bmMu.Unlock()
	for _, b := range img.bitmaps {
		if !b.inconsistent && b.loaded {
			b.clearBeyond(img.bitCount(b), uint64(img.clusterSize)*8)
		}
	}
}

// MeasureBitmaps is the "bitmaps size" of qemu-img measure for a qcow2
// target of the given cluster size: for each bitmap, all its data as if
// every bit were set plus its table, each rounded up to clusters, and the
// directory rounded up to clusters (the sum iotest 190 computes).
func (img *Image) MeasureBitmaps(clusterSize int64) int64 {
	img.mu.Lock()
	defer img.mu.Unlock()
	roundUp := func(n int64) int64 { return (n + clusterSize - 1) / clusterSize * clusterSize }
	var total, dir int64
	for _, b := range img.bitmaps {
		gran := int64(1) << b.granBits
		bytes := ((int64(img.hdr.size)+gran-1)/gran + 7) / 8
		clusters := (bytes + clusterSize - 1) / clusterSize
		total += clusters*clusterSize + roundUp(clusters*8)
		dir += int64(b.encodedSize())
	}
	return total + roundUp(dir)
}
