package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// resize changes the virtual size. Growing enlarges the L1 table when
// needed; shrinking is refused while any cluster beyond the new end is
// allocated or zero-flagged. Images with snapshots cannot be resized, as
// in QEMU.
func (img *Image) resize(newSize int64) error {
	if img.readOnly {
		return errReadOnly
	}
	if newSize < 0 || newSize%512 != 0 {
		return fmt.Errorf("invalid size %d: must be a non-negative multiple of 512", newSize)
	}
	img.quiesce()
	defer img.unquiesce()
	if img.hdr.nbSnapshots > 0 {
		return errors.New("can't resize an image which has snapshots")
	}
	old := int64(img.hdr.size)
	if newSize == old {
		return nil
	}
	if newSize < old {
		if err := img.checkEmptyFrom(newSize); err != nil {
			return err
		}
	} else if err := img.dropActiveTail(img.vmStateL1Index(uint64(old))); err != nil {
		// A save of VM state interrupted by a crash may have left state
		// beyond the disk, which must not show up in the grown disk.
		return err
	} else if need := l1EntriesFor(uint64(newSize), img.clusterBits, img.l2EntryShift); int64(need) > int64(len(img.l1)) {
		if err := img.growL1(int64(need)); err != nil {
			return err
		}
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(newSize))
	if err := img.writeMeta(b[:], 24); err != nil {
		return fmt.Errorf("writing virtual size: %w", err)
	}
	img.hdr.size = uint64(newSize)
	img.size.Store(newSize)
	return img.barrier()
}

// checkEmptyFrom refuses a shrink that would cut off data.
func (img *Image) checkEmptyFrom(newSize int64) error {
	cs := img.clusterSize
	first := (newSize + cs - 1) / cs // first guest cluster wholly beyond
	for c := first; c < (int64(img.hdr.size)+cs-1)/cs; c++ {
		l1i, l2i := c/img.l2Entries, c%img.l2Entries
		l2off, err := img.l2TableOffset(img.l1, l1i)
		if err != nil {
			return err
		}
		if l2off == 0 {
			c += img.l2Entries - l2i - 1
			continue
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		if ent, bm := img.l2Entry(e.data, l2i); ent&^oflagCopied != 0 || bm != 0 {
			return fmt.Errorf("cannot shrink to %d bytes: guest cluster at %#x is allocated (discard it first)", newSize, c*cs)
		}
	}
	return nil
}

// growL1 moves the active L1 table to a new one of n entries. Order: new
// table, barrier, header, barrier, then the old table is freed.
func (img *Image) growL1(n int64) error {
	if n*8 > maxL1Bytes {
		return fmt.Errorf("%w: L1 table of %d entries would exceed %d bytes", block.ErrSizeTooLarge, n, maxL1Bytes)
	}
	cs := img.clusterSize
	clusters := (n*8 + cs - 1) / cs
	off, err := img.allocClusters(clusters)
	if err != nil {
		return err
	}
	l1 := make([]uint64, n)
	copy(l1, img.l1)
	raw := make([]byte, clusters*cs)
	for i, v := range l1 {
		binary.BigEndian.PutUint64(raw[i*8:], v)
	}
	if err := img.writeMeta(raw, off); err != nil {
		return fmt.Errorf("writing L1 table: %w", err)
	}
	if err := img.rbc.flushAndBarrier(); err != nil {
		return err
	}
	var hb [12]byte
	binary.BigEndian.PutUint32(hb[0:], uint32(n))
	binary.BigEndian.PutUint64(hb[4:], uint64(off))
	if err := img.writeMeta(hb[:], 36); err != nil {
		return fmt.Errorf("updating L1 table location: %w", err)
	}
	if err := img.barrier(); err != nil {
		return err
	}
	oldOff, oldN := int64(img.hdr.l1Off), int64(img.hdr.l1Size)
	img.l1, img.hdr.l1Off, img.hdr.l1Size = l1, uint64(off), uint32(n)
	if oldOff != 0 && oldN > 0 {
		return img.freeClusters(oldOff, (oldN*8+cs-1)/cs)
	}
	return nil
}

// flushAndBarrier writes this cache's dirty tables and syncs.
func (c *tableCache) flushAndBarrier() error {
	n, err := c.flush()
	if err != nil || n == 0 {
		return err
	}
	return c.img.barrier()
}
