package qcow2

import (
	"errors"

	"github.com/petrel-vmm/petrel/block"
)

// Every exported mutator below has the same shape: writable() refuses a
// read-only or corrupt-marked image (errReadOnly, errMarkedCorrupt) before
// anything is touched, and noteCorrupt turns an error that wraps
// ErrCorrupt into the image's corrupt mark, so the failed change is the
// last one. The unexported functions they wrap do the work and hold the
// locks.

// WriteAt writes guest data (see writeAt). Safe for concurrent use; a
// range crossing the end of the disk fails whole.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if err := img.writable(); err != nil {
		return 0, err
	}
	img.markBitmaps(off, int64(len(p)))
	n, err := img.writeAt(p, off)
	return n, img.noteCorrupt(err)
}

// WriteZeroes makes the range read as zeroes (see writeZeroes).
func (img *Image) WriteZeroes(off, n int64, unmap bool) error {
	if err := img.writable(); err != nil {
		return err
	}
	img.markBitmaps(off, n)
	return img.noteCorrupt(img.writeZeroes(off, n, unmap))
}

// Discard deallocates whole clusters in the range (see discard).
func (img *Image) Discard(off, n int64) error {
	if err := img.writable(); err != nil {
		return err
	}
	img.markBitmaps(off, n)
	return img.noteCorrupt(img.discard(off, n))
}

// WriteCompressed writes one cluster compressed (see writeCompressed).
func (img *Image) WriteCompressed(p []byte, off int64) error {
	if err := img.writable(); err != nil {
		return err
	}
	if img.hdr.cryptMethod != cryptNone {
		return errors.New("Compression is not supported with encryption")
	}
	img.markBitmaps(off, int64(len(p)))
	return img.noteCorrupt(img.writeCompressed(p, off))
}

// MakeEmpty drops every cluster of the active image (see makeEmpty).
func (img *Image) MakeEmpty() error {
	if err := img.writable(); err != nil {
		return err
	}
	img.markBitmaps(0, img.Size())
	return img.noteCorrupt(img.makeEmpty())
}

// Resize changes the virtual size (see resize): a multiple of 512 bytes,
// refused for a version 2 image with snapshots.
func (img *Image) Resize(newSize int64) error {
	if err := img.writable(); err != nil {
		return err
	}
	// Growing over a backing file longer than the image: as QEMU's
	// bdrv_co_truncate (BDRV_REQ_ZERO_WRITE) and qcow2_co_truncate, the
	// new area is made to read as zeroes instead of the backing file's
	// data past the old end (iotest 292). A v2 image cannot hold zero
	// clusters over a backing file; QEMU fails the zeroing there, so it
	// is refused before anything changes.
	// An external data file follows the new size (resizeDataFile).
	return img.resizeThen(newSize, func(old int64) error {
		return img.noteCorrupt(img.resizeDataFile(old, newSize))
	})
}

// resizeThen is Resize with prepare run between the size change and the
// zeroing of the new area (preallocation goes there, so that the zeroing
// keeps the preallocated clusters, as qcow2_co_truncate does).
func (img *Image) resizeThen(newSize int64, prepare func(old int64) error) error {
	old := img.Size()
	if err := img.checkBitmapsResize(newSize); err != nil {
		return err
	}
	zero := newSize > old && img.backing != nil && img.backing.Size() > old
	if zero && img.hdr.version < 3 {
		return errors.New("Failed to zero out new clusters: Operation not supported")
	}
	if newSize < old {
		// A shrink drops the clusters wholly beyond the new end first,
		// as qcow2_co_truncate's full discard of the cropped clusters
		// (qemu-img resize --shrink; iotests 163, 250, 292). The rest
		// of a cluster the new end cuts stays allocated.
		cs := img.clusterSize
		if from := (newSize + cs - 1) &^ (cs - 1); from < old {
			if err := img.noteCorrupt(img.zeroClusters(from, old, true, modeEmpty)); err != nil {
				return err
			}
		}
	}
	if err := img.noteCorrupt(img.resize(newSize)); err != nil {
		return err
	}
	img.resizeBitmaps()
	if err := prepare(old); err != nil || !zero {
		return err
	}
	return img.WriteZeroes(old, newSize-old, false)
}

// CreateSnapshot records the current disk state under name (a disk-only
// snapshot, as qemu-img snapshot -c makes; CreateSnapshotWithState adds VM
// state). Names need not be unique; IDs are assigned.
func (img *Image) CreateSnapshot(name string) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.createSnapshot(name))
}

// ApplySnapshot makes a snapshot's state (by ID or name) the active state.
func (img *Image) ApplySnapshot(nameOrID string) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.applySnapshot(nameOrID))
}

// DeleteSnapshot removes a snapshot (by ID or name).
func (img *Image) DeleteSnapshot(nameOrID string) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.deleteSnapshot(nameOrID))
}

// The optional block interfaces the engine implements, checked at compile
// time so that a signature drift breaks the build, not a type assertion
// at run time.
var (
	_ block.Image            = (*Image)(nil)
	_ block.Checker          = (*Image)(nil)
	_ block.Snapshotter      = (*Image)(nil)
	_ block.Resizer          = (*Image)(nil)
	_ block.BackingSetter    = (*Image)(nil)
	_ block.CompressedWriter = (*Image)(nil)
	_ block.Describer        = (*Image)(nil)
	_ block.Emptier          = (*Image)(nil)
	_ block.Named            = (*Image)(nil)
	_ block.SnapshotLoader   = (*Image)(nil)
	_ block.BitmapHolder     = (*Image)(nil)
	_ block.VMStateHolder    = (*Image)(nil)
)

// ResizePrealloc grows the image and preallocates the new area in mode
// (metadata, falloc, full), as qemu-img resize --preallocation with
// QEMU's qcow2_co_truncate (iotest 125). Shrinking with preallocation is
// refused in QEMU's words.
func (img *Image) ResizePrealloc(newSize int64, mode string) error {
	if err := img.writable(); err != nil {
		return err
	}
	old := img.Size()
	if newSize < old {
		return errors.New("Preallocation can't be used for shrinking an image")
	}
	return img.resizeThen(newSize, func(old int64) error {
		// The cluster the old end cuts keeps what the image reads there
		// (backing data included): it is allocated by writing that
		// back, before the rest of the new area is preallocated (iotest
		// 125 reads the backing file's data below the old end).
		cs := img.clusterSize
		if start := old &^ (cs - 1); start != old {
			img.mu.Lock()
			m, err := img.resolve(start, cs)
			img.mu.Unlock()
			if err != nil {
				return err
			}
			if m.kind == mapUnallocated {
				buf := make([]byte, old-start)
				if _, err := img.ReadAt(buf, start); err != nil {
					return err
				}
				if _, err := img.WriteAt(buf, start); err != nil {
					return err
				}
			}
		}
		return img.noteCorrupt(img.preallocate(mode, old))
	})
}
