package qcow2

import (
	"errors"
	"fmt"
)

// Corruption found while changing the image marks it corrupt, as QEMU's
// qcow2_signal_corruption: the incompatible "corrupt" bit is set on disk
// (v3) and every later change is refused, so that damaged metadata is not
// built upon. Such images open read-only, or writable for repair only
// (block.Options.Repair, QEMU's BDRV_O_CHECK): Check may then rebuild the
// metadata, and a repair that leaves no corruption clears the bit
// (qcow2_mark_consistent); every other change stays refused meanwhile.

// errMarkedCorrupt is what every change to a corrupt-marked image gets.
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

// noteCorrupt marks the image corrupt when err says its metadata is. Only
// the first such error marks it (the CAS); a version 2 image has no
// corrupt bit, so there the mark lives in memory only and the next open
// is not warned. The returned error says the image is now marked.
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
