package qcow2

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// discard deallocates whole clusters in the range (partial clusters are
// left alone, as QEMU does). With a v3 image over a backing file the
// clusters become zero clusters so the backing data stays hidden; a v2
// image has no zero flag, so there a discarded cluster reads the backing
// file again. The disk's short last cluster counts as whole.
func (img *Image) discard(off, n int64) error {
	if img.readOnly {
		return errReadOnly
	}
	if err := img.checkRange(off, n); err != nil {
		return err
	}
	cs := img.clusterSize
	start := (off + cs - 1) &^ (cs - 1)
	end := (off + n) &^ (cs - 1)
	if off+n == img.Size() {
		end = off + n // the short last cluster counts as whole
	}
	if end <= start {
		return nil
	}
	return img.zeroClusters(start, end, false, modeDiscard)
}

// writeZeroes makes the range read as zeroes: partial clusters are written,
// whole ones become zero clusters (v3) or unallocated (v2 without a
// backing file); unmap frees their host clusters. A v2 image over a
// backing file can only get literal zeroes, which allocates clusters.
func (img *Image) writeZeroes(off, n int64, unmap bool) error {
	if img.readOnly {
		return errReadOnly
	}
	if err := img.checkRange(off, n); err != nil {
		return err
	}
	cs := img.clusterSize
	start := (off + cs - 1) &^ (cs - 1)
	end := (off + n) &^ (cs - 1)
	if off+n == img.Size() {
		end = off + n
	}
	if end <= start || (img.hdr.version < 3 && img.backing != nil) {
		return img.writeZeroData(off, n)
	}
	if start > off {
		if err := img.writeZeroData(off, start-off); err != nil {
			return err
		}
	}
	if img.rawData {
		// The raw data file must read the zeroes too.
		if err := img.zeroData(start, end-start, unmap); err != nil {
			return err
		}
	}
	if err := img.zeroClusters(start, end, unmap, modeZero); err != nil {
		return err
	}
	if off+n > end {
		return img.writeZeroData(end, off+n-end)
	}
	return nil
}

// writeZeroData writes literal zeroes through WriteAt, a cluster at a time
// from a pooled buffer (allocating where needed, like any guest write).
func (img *Image) writeZeroData(off, n int64) error {
	bp := img.getBuf()
	defer img.putBuf(bp)
	zero := *bp
	clear(zero)
	for n > 0 {
		c := min(n, int64(len(zero)))
		if _, err := img.WriteAt(zero[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// What zeroClusters does to each cluster.
type zeroMode int

const (
	modeZero    zeroMode = iota // WriteZeroes: reads as zeroes afterwards
	modeDiscard                 // Discard: zeroes or, for v2, backing data
	modeEmpty                   // MakeEmpty: unallocated, reads the backing file
)

// zeroClusters rewrites the L2 entries of the whole clusters in [start,
// end) according to mode. Entries are written to disk before the clusters
// they held are released. It runs quiesced: no guest I/O may hold a host
// offset it is about to free.
//
// The new entry, standard L2: modeEmpty, and a discard where the result
// must read as unallocated (v2, or no backing file to hide), clear it (0);
// v2 zeroing clears it too, since unallocated reads as zeroes without a
// backing file (writeZeroes handled the v2-with-backing case). Otherwise
// it becomes a zero cluster, keeping its host cluster (ZERO | offset, "a
// preallocation" in the spec's words) when the caller did not ask to unmap
// and the cluster is this image's alone. An L1 range without an L2 table
// is left alone when unallocated already reads as wanted.
//
// With an external data file nothing is refcounted: a cluster that loses
// its mapping has its data file range discarded instead (QEMU passes such
// discards down to the data file), once the entry is on disk.
func (img *Image) zeroClusters(start, end int64, unmap bool, mode zeroMode) error {
	discard := mode != modeZero
	img.quiesce()
	defer img.unquiesce()
	v3 := img.hdr.version >= 3
	cs := img.clusterSize
	var released []uint64
	var dropped []int64 // guest offsets of the clusters in released
	for off := start; off < end; {
		l1i, l2i := img.l2Index(off)
		count := min((end-off+cs-1)/cs, img.l2Entries-l2i)
		next := off + count*cs
		l2off, err := img.l2TableOffset(img.l1, l1i)
		if err != nil {
			return err
		}
		if l2off == 0 && (!v3 || mode == modeEmpty || (discard && img.backing == nil)) {
			off = next
			continue // already unallocated, which reads as wanted
		}
		if l2off, err = img.l2ForWrite(l1i); err != nil {
			return err
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		released, dropped = released[:0], dropped[:0]
		for i := l2i; i < l2i+count; i++ {
			old, obm := img.l2Entry(e.data, i)
			if img.extL2 {
				nw, nbm := img.zeroExtended(old, mode, unmap)
				if nw == old && nbm == obm {
					continue
				}
				img.setL2Entry(e.data, i, nw)
				img.setL2Bitmap(e.data, i, nbm)
				e.dirty = true
				if img.dropsCluster(old, nw) {
					released = append(released, old)
					dropped = append(dropped, off+(i-l2i)*cs)
				}
				continue
			}
			var nw uint64
			switch {
			case mode == modeEmpty:
				nw = 0
			case discard && (!v3 || img.backing == nil):
				nw = 0
			case !v3:
				nw = 0 // v2 zeroing without a backing file: unallocated reads as zeroes
			case !unmap && !discard && old&oflagCompressed == 0 && img.allocated(old) && old&oflagCopied != 0:
				nw = old | oflagZero // keep the preallocated cluster
			default:
				nw = oflagZero
			}
			if nw == old {
				continue
			}
			img.setL2Entry(e.data, i, nw)
			e.dirty = true
			if img.dropsCluster(old, nw) {
				released = append(released, old)
				dropped = append(dropped, off+(i-l2i)*cs)
			}
		}
		if len(released) > 0 {
			if err := img.l2c.writeThrough(e); err != nil {
				return err
			}
			if err := img.barrier(); err != nil {
				return err
			}
			for _, old := range released {
				if err := img.releaseEntry(old); err != nil {
					return err
				}
			}
			if img.external {
				for _, g := range dropped {
					img.discardData(g, cs)
				}
			}
		}
		off = next
	}
	return nil
}

// allocated reports whether an uncompressed L2 entry maps a host cluster
// (see hostCluster).
func (img *Image) allocated(l2e uint64) bool {
	_, ok := img.hostCluster(l2e)
	return ok
}

// dropsCluster reports whether replacing L2 entry old by nw lets go of
// what old held: a compressed cluster, or a host cluster nw does not keep.
func (img *Image) dropsCluster(old, nw uint64) bool {
	return old&oflagCompressed != 0 || img.allocated(old) && !img.allocated(nw)
}

// zeroExtended is zeroClusters' rule for extended L2 entries, where zero
// state lives in the subcluster bitmap (bits 32-63) instead of bit 0.
func (img *Image) zeroExtended(old uint64, mode zeroMode, unmap bool) (uint64, uint64) {
	switch {
	case mode == modeEmpty, mode == modeDiscard && img.backing == nil:
		return 0, 0
	case mode == modeZero && !unmap && old&oflagCompressed == 0 && img.allocated(old) && old&oflagCopied != 0:
		return old, allSubclustersZero // keep the host cluster
	}
	return 0, allSubclustersZero
}

// BlockStatus describes the extent at off, following the backing chain for
// unallocated ranges. A compressed run is data without a host offset
// (qemu-img map prints no offset for it); n <= 0 means to the end of the
// disk.
func (img *Image) BlockStatus(off, n int64) (block.Extent, error) {
	size := img.Size()
	if off < 0 || off >= size {
		return block.Extent{}, fmt.Errorf("block status at %d: outside the disk (size %d)", off, size)
	}
	if n <= 0 || n > size-off {
		n = size - off
	}
	img.mu.Lock()
	m, err := img.resolve(off, n)
	img.mu.Unlock()
	if err != nil {
		return block.Extent{}, err
	}
	ext := block.Extent{Offset: off, Length: m.length, HostOffset: -1}
	switch m.kind {
	case mapZero:
		ext.Flags = block.ExtentZero | block.ExtentAllocated
		if m.host != 0 {
			// qemu-img map shows a preallocated zero cluster's offset
			// (iotests 154, 179).
			ext.HostOffset = m.host
			ext.File = img.dataName()
		}
	case mapData:
		ext.Flags = block.ExtentData | block.ExtentAllocated
		ext.HostOffset = m.host
		ext.File = img.dataName()
	case mapCompressed:
		ext.Flags = block.ExtentData | block.ExtentAllocated
		ext.File = img.path
	case mapUnallocated:
		return block.BackingStatus(img.backing, off, m.length)
	}
	if img.hdr.cryptMethod != cryptNone {
		// Ciphertext is no guest data to read at a host offset: QEMU
		// reports none for encrypted images (qcow2_co_block_status).
		ext.HostOffset = -1
	}
	return ext, nil
}

// makeEmpty drops every cluster of the active image so that it reads
// through to its backing file again (qemu-img commit), like
// qcow2_make_empty. Snapshots keep their clusters. The L2 tables stay
// allocated (their entries cleared); the file does not shrink, and the
// freed clusters are reused by later writes.
func (img *Image) makeEmpty() error {
	if img.readOnly {
		return errReadOnly
	}
	img.event(block.EventEmptyImagePrepare)
	if err := img.zeroClusters(0, img.Size(), true, modeEmpty); err != nil {
		return err
	}
	return img.Flush()
}
