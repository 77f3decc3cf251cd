package qcow2

import "github.com/petrel-vmm/petrel/block"

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
	n, err := img.writeAt(p, off)
	return n, img.noteCorrupt(err)
}

// WriteZeroes makes the range read as zeroes (see writeZeroes).
func (img *Image) WriteZeroes(off, n int64, unmap bool) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.writeZeroes(off, n, unmap))
}

// Discard deallocates whole clusters in the range (see discard).
func (img *Image) Discard(off, n int64) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.discard(off, n))
}

// WriteCompressed writes one cluster compressed (see writeCompressed).
func (img *Image) WriteCompressed(p []byte, off int64) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.writeCompressed(p, off))
}

// MakeEmpty drops every cluster of the active image (see makeEmpty).
func (img *Image) MakeEmpty() error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.makeEmpty())
}

// Resize changes the virtual size (see resize): a multiple of 512 bytes,
// refused while the image has snapshots or when a shrink would drop data.
func (img *Image) Resize(newSize int64) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.resize(newSize))
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
