package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// resize changes the virtual size. Growing enlarges the L1 table when
// needed; shrinking is refused while any cluster beyond the new end is
// allocated or zero-flagged (Resize discards them first), then drops the
// L2 tables beyond it and cuts the file after its last cluster in use.
// Version 2 images with snapshots cannot be resized, as in QEMU.
func (img *Image) resize(newSize int64) error {
	if img.readOnly {
		return errReadOnly
	}
	if newSize < 0 || newSize%512 != 0 {
		return fmt.Errorf("invalid size %d: must be a non-negative multiple of 512", newSize)
	}
	img.quiesce()
	defer img.unquiesce()
	// Version 2 snapshot entries cannot record their own disk size, so
	// those images keep their size while they have snapshots (QEMU's
	// qcow2_co_truncate and its words).
	if img.hdr.nbSnapshots > 0 && img.hdr.version < 3 {
		return errors.New("Can't resize a v2 image which has snapshots")
	}
	old := int64(img.hdr.size)
	if newSize == old {
		return nil
	}
	if newSize < old {
		if err := img.checkEmptyFrom(newSize); err != nil {
			return err
		}
		// The L2 tables wholly beyond the new end go with their L1
		// entries, as qcow2_shrink_l1_table (iotest 163 reads the L1
		// table: nothing may be left past the entries the size needs).
		need := l1EntriesFor(uint64(newSize), img.clusterBits, img.l2EntryShift)
		if err := img.dropActiveTail(int64(need)); err != nil {
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
	// size is header bytes 24-31 (spec "Header"); only it changes, the
	// rest of the header is left as it is on disk.
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(newSize))
	if err := img.writeMeta(b[:], 24); err != nil {
		return fmt.Errorf("writing virtual size: %w", err)
	}
	img.hdr.size = uint64(newSize)
	img.size.Store(newSize)
	if err := img.barrier(); err != nil {
		return err
	}
	if newSize < old {
		return img.truncateUnused()
	}
	return nil
}

// truncateUnused cuts the file after its last cluster in use, as
// qcow2_co_truncate does after a shrink (iotest 250 measures the space
// given back). Every reference is on disk by now, so what is cut is free.
func (img *Image) truncateUnused() error {
	if err := img.dropUnusedRefblocks(); err != nil {
		return err
	}
	end := img.fileEnd.Load()
	last := (end+img.clusterSize-1)>>img.clusterBits - 1
	for ; last >= 0; last-- {
		rc, err := img.getRefcount(last)
		if err != nil {
			return err
		}
		if rc != 0 {
			break
		}
	}
	// The clusters freed inside the file give their space back too: as
	// QEMU's full discard of the cropped clusters, which passes down to
	// the file (iotest 250 measures the disk usage).
	for c := int64(0); c < last; {
		rc, err := img.getRefcount(c)
		if err != nil {
			return err
		}
		if rc != 0 {
			c++
			continue
		}
		run := int64(1)
		for ; c+run < last; run++ {
			if rc, err = img.getRefcount(c + run); err != nil {
				return err
			}
			if rc != 0 {
				break
			}
		}
		// Best effort, as a discard: a file system without hole
		// punching keeps the space, nothing else changes.
		_ = img.f.Fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, c<<img.clusterBits, run<<img.clusterBits)
		c += run
	}
	if keep := (last + 1) << img.clusterBits; keep < end {
		if err := img.f.Truncate(keep); err != nil {
			return fmt.Errorf("truncating the tail of the image: %w", err)
		}
		img.fileEnd.Store(keep)
	}
	return nil
}

// checkEmptyFrom refuses a shrink that would cut off data: any guest
// cluster wholly beyond newSize whose entry is not plain unallocated
// (data, compressed, a zero flag, or any subcluster bit) fails it, with
// qemu-img's advice to discard first. A range without an L2 table is
// skipped a table at a time.
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
	// Only the table's bytes are written, as qcow2_grow_l1_table: a new
	// image's file ends 8 bytes into its L1 cluster (iotest 243 prints
	// the size); the rest of the cluster is never read.
	raw := make([]byte, n*8)
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

// flushAndBarrier writes this cache's dirty tables and syncs, if there
// were any (no sync otherwise). growL1 uses it so that the new L1 table's
// refcounts are durable before the header points at the table.
func (c *tableCache) flushAndBarrier() error {
	n, err := c.flush()
	if err != nil || n == 0 {
		return err
	}
	return c.img.barrier()
}

// dropUnusedRefblocks takes out of the refcount table every refcount
// block that counts no cluster but itself, as qcow2_shrink_reftable after
// a shrink (iotest 163: every block the table names must count something).
// Each table entry is cleared on disk before its block is released, so a
// crash leaks the block at worst.
func (img *Image) dropUnusedRefblocks() error {
	if err := img.rbc.flushAndBarrier(); err != nil {
		return err
	}
	for ti := range int64(len(img.rt)) {
		off, err := img.refblockOffset(ti)
		if err != nil {
			return err
		}
		if off == 0 {
			continue
		}
		e, err := img.rbc.get(off)
		if err != nil {
			return err
		}
		own := off >> img.clusterBits
		self := own/img.rbEntries == ti // the block counts itself
		unused := true
		for i := range img.rbEntries {
			if (!self || i != own%img.rbEntries) && img.refcountAt(e.data, i) != 0 {
				unused = false
				break
			}
		}
		if !unused {
			continue
		}
		img.rt[ti] = 0
		var b [8]byte
		if err := img.writeMeta(b[:], int64(img.hdr.rtOff)+ti*8); err != nil {
			return fmt.Errorf("clearing refcount table entry %d: %w", ti, err)
		}
		if err := img.barrier(); err != nil {
			return err
		}
		img.rbc.drop(off)
		if !self {
			if err := img.addRefcount(own, -1); err != nil {
				return err
			}
		}
	}
	return img.rbc.flushAndBarrier()
}
