package qcow2

import (
	"errors"
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// Corruption found while changing the image marks it corrupt, as QEMU's
// qcow2_signal_corruption: the incompatible "corrupt" bit is set on disk
// (v3) and every later change is refused, so that damaged metadata is not
// built upon. Such images open read-only, or writable for repair only
// (block.Options.Repair, QEMU's BDRV_O_CHECK): Check may then rebuild the
// metadata, and a repair that leaves no corruption clears the bit
// (qcow2_mark_consistent); every other change stays refused meanwhile.

var errMarkedCorrupt = errors.New("qcow2 image is marked corrupt; further writes are refused (open read-only, repair with check -r all)")

// writable refuses changes to read-only or corrupt-marked images.
func (img *Image) writable() error {
	if img.readOnly {
		return errReadOnly
	}
	if img.corrupted.Load() {
		return errMarkedCorrupt
	}
	return nil
}

// noteCorrupt marks the image corrupt when err says its metadata is.
func (img *Image) noteCorrupt(err error) error {
	if err == nil || !errors.Is(err, ErrCorrupt) || !img.corrupted.CompareAndSwap(false, true) {
		return err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.hdr.version >= 3 {
		img.hdr.incompat |= incompatCorrupt
		if werr := img.writeFeatures(); werr != nil {
			return fmt.Errorf("%w (marking the image corrupt failed: %v)", err, werr)
		}
	}
	return fmt.Errorf("%w; the image is now marked corrupt", err)
}

// markConsistent clears the corrupt mark, in memory and durably on disk,
// after a repair found no remaining corruption. Called under img.mu.
func (img *Image) markConsistent() error {
	if img.hdr.incompat&incompatCorrupt != 0 {
		img.hdr.incompat &^= incompatCorrupt
		if err := img.writeFeatures(); err != nil {
			img.hdr.incompat |= incompatCorrupt
			return fmt.Errorf("clearing the corrupt bit: %w", err)
		}
	}
	img.corrupted.Store(false)
	return nil
}

// WriteAt writes guest data (see writeAt).
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

// Resize changes the virtual size (see resize).
func (img *Image) Resize(newSize int64) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.resize(newSize))
}

// CreateSnapshot records the current disk state under name.
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
)
