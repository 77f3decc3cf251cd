package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/petrel-vmm/petrel/block"
)

// Refcount table entries keep bits 9-63 (spec "Host cluster management").
const reftOffsetMask = 0xfffffffffffffe00

// Refcount handling, like qcow2-refcount.c. Every function here runs under
// Image.mu. Refcount blocks live in img.rbc; the refcount table is held in
// memory (img.rt) and written through entry by entry.
//
// Meaning (spec "Host cluster management"): 0 free, 1 used by one table
// entry (the COPIED flag's condition), 2 or more shared with a snapshot,
// so a write must copy. Host cluster idx is counted by entry
// idx % rbEntries of the block that table entry idx / rbEntries points at;
// a table entry of 0 means every cluster it would cover is free.
//
// Allocation never runs behind the caller's back: allocClusters sets the
// new refcounts (in the cache) before the caller writes any table that
// points at the clusters, and the cache dependency writes refcount blocks
// before L2 tables.

// refcountAt decodes entry i of a refcount block of width img.rcBits
// (spec "Host cluster management": refcount_bits = 1 << refcount_order,
// big-endian for byte-sized and wider entries; sub-byte entries are
// packed from the least significant bit of each byte).
func (img *Image) refcountAt(blk []byte, i int64) uint64 {
	return refcountEntry(blk, i, img.rcBits)
}

// refcountEntry decodes entry i of a refcount block of width w bits.
func refcountEntry(blk []byte, i int64, w uint32) uint64 {
	switch w {
	case 64:
		return binary.BigEndian.Uint64(blk[i*8:])
	case 32:
		return uint64(binary.BigEndian.Uint32(blk[i*4:]))
	case 16:
		return uint64(binary.BigEndian.Uint16(blk[i*2:]))
	case 8:
		return uint64(blk[i])
	default: // 1, 2, 4 bits: bit 0 is the least significant bit of a byte
		bit := uint64(i) * uint64(w)
		return uint64(blk[bit/8]>>(bit%8)) & (1<<w - 1)
	}
}

// setRefcountAt stores v in entry i of a refcount block, the inverse of
// refcountAt; v must fit the width (addRefcount checks). Only the cached
// block changes: callers mark the entry dirty.
func (img *Image) setRefcountAt(blk []byte, i int64, v uint64) {
	setRefcountEntry(blk, i, img.rcBits, v)
}

// setRefcountEntry stores v in entry i of a refcount block of width w bits.
func setRefcountEntry(blk []byte, i int64, w uint32, v uint64) {
	switch w {
	case 64:
		binary.BigEndian.PutUint64(blk[i*8:], v)
	case 32:
		binary.BigEndian.PutUint32(blk[i*4:], uint32(v))
	case 16:
		binary.BigEndian.PutUint16(blk[i*2:], uint16(v))
	case 8:
		blk[i] = byte(v)
	default:
		bit := uint64(i) * uint64(w)
		mask := byte(1<<w-1) << (bit % 8)
		blk[bit/8] = blk[bit/8]&^mask | byte(v<<(bit%8))&mask
	}
}

// maxRefcount is the largest value a refcount entry holds: 2^rcBits - 1,
// so 1-bit refcounts allow no snapshot sharing at all.
func (img *Image) maxRefcount() uint64 {
	if img.rcBits == 64 {
		return ^uint64(0)
	}
	return 1<<img.rcBits - 1
}

// refblockOffset returns the host offset of the refcount block covering
// table index ti, 0 when it is not allocated or ti is past the table
// (both mean every cluster it would cover has refcount 0). The reserved
// low 9 bits are masked off; a misaligned offset is corruption.
func (img *Image) refblockOffset(ti int64) (int64, error) {
	if ti >= int64(len(img.rt)) {
		return 0, nil
	}
	off := int64(img.rt[ti] & reftOffsetMask)
	if off < 0 || off&(img.clusterSize-1) != 0 {
		return 0, corruptf("refcount block offset %#x (table index %d) is not cluster aligned", off, ti)
	}
	return off, nil
}

// getRefcount returns the refcount of host cluster idx.
func (img *Image) getRefcount(idx int64) (uint64, error) {
	off, err := img.refblockOffset(idx / img.rbEntries)
	if err != nil || off == 0 {
		return 0, err
	}
	e, err := img.rbc.get(off)
	if err != nil {
		return 0, err
	}
	return img.refcountAt(e.data, idx%img.rbEntries), nil
}

// addRefcount adds delta to the refcount of host cluster idx, which must be
// covered by an allocated refcount block. Underflow is corruption (some
// table referenced a cluster it was not counted for); overflow of the
// refcount width is an ordinary error (too many snapshots share it). The
// first change on a lazy-refcounts image sets the dirty bit first. A
// cluster reaching 0 lowers freeHint so that it is found again.
func (img *Image) addRefcount(idx, delta int64) error {
	if err := img.markDirty(); err != nil {
		return err
	}
	ti := idx / img.rbEntries
	off, err := img.refblockOffset(ti)
	if err != nil {
		return err
	}
	if off == 0 {
		// allocClusters creates blocks before it sets refcounts, so a
		// missing block here means metadata points at an unaccounted cluster.
		return corruptf("cluster %d has no refcount block (refcount change %+d)", idx, delta)
	}
	e, err := img.rbc.get(off)
	if err != nil {
		return err
	}
	i := idx % img.rbEntries
	old := img.refcountAt(e.data, i)
	nv := old + uint64(delta)
	if delta < 0 && uint64(-delta) > old {
		return corruptf("refcount of cluster %d would drop below zero (%d%+d)", idx, old, delta)
	}
	if delta > 0 && (nv < old || nv > img.maxRefcount()) {
		return fmt.Errorf("refcount of cluster %d would exceed %d-bit limit: %w", idx, img.rcBits, errRefcountOverflow)
	}
	img.setRefcountAt(e.data, i, nv)
	e.dirty = true
	if nv == 0 {
		img.freeHint = min(img.freeHint, idx)
		if img.freeByte != 0 && (img.freeByte-1)>>img.clusterBits == idx {
			img.freeByte = 0 // never pack compressed data into a freed cluster
		}
	}
	return nil
}

// errRefcountOverflow: a refcount would exceed what its width holds (too
// many snapshots share a cluster).
var errRefcountOverflow = errors.New("refcount overflow")

// isFree reports whether host cluster idx has refcount 0; a cluster whose
// refcount block does not exist yet is free.
func (img *Image) isFree(idx int64) (bool, error) {
	ti := idx / img.rbEntries
	off, err := img.refblockOffset(ti)
	if err != nil {
		return false, err
	}
	if off == 0 {
		return true, nil
	}
	e, err := img.rbc.get(off)
	if err != nil {
		return false, err
	}
	return img.refcountAt(e.data, idx%img.rbEntries) == 0, nil
}

// allocClusters finds n contiguous free host clusters, gives each refcount
// 1 (creating refcount blocks and growing the table as needed, QEMU's
// alloc_clusters_noref + update_refcount) and returns the host offset.
func (img *Image) allocClusters(n int64) (int64, error) {
	if img.readOnly {
		return 0, fmt.Errorf("image is read-only")
	}
	img.event(block.EventClusterAlloc)
	for {
		start, err := img.findFree(n)
		if err != nil {
			return 0, err
		}
		// Every refcount block covering [start, start+n) must exist before
		// the refcounts can be set; creating one consumes a free cluster,
		// so search again afterwards.
		missing := int64(-1)
		for ti := start / img.rbEntries; ti <= (start+n-1)/img.rbEntries; ti++ {
			off, err := img.refblockOffset(ti)
			if err != nil {
				return 0, err
			}
			if off == 0 {
				missing = ti
				break
			}
		}
		if missing >= 0 {
			if err := img.newRefblock(missing, start); err != nil {
				return 0, err
			}
			continue
		}
		for i := start; i < start+n; i++ {
			if err := img.addRefcount(i, 1); err != nil {
				return 0, err
			}
		}
		img.freeHint = start + n
		img.noteEnd((start + n) << img.clusterBits)
		return start << img.clusterBits, nil
	}
}

// findFree returns the first run of n free clusters at or after freeHint
// (never cluster 0, the header). A range without a refcount block counts
// as free without its clusters being visited one by one, so searching
// past the end of the file is cheap; host offsets stop at 2^56, the
// largest an L2 entry can hold. It only looks: nothing is reserved until
// allocClusters sets the refcounts, which is why both run under mu.
func (img *Image) findFree(n int64) (int64, error) {
	start := max(img.freeHint, 1)
	run := int64(0)
	for i := start; ; i++ {
		if i >= 1<<(56-img.clusterBits) {
			// L2 entries hold host offsets below 2^56.
			return 0, fmt.Errorf("image file is full (host offsets reach 2^56)")
		}
		// A range without a refcount block is all free: when it alone
		// completes the run, stop without visiting its clusters.
		ti := i / img.rbEntries
		if off, err := img.refblockOffset(ti); err == nil && off == 0 && i%img.rbEntries == 0 && run+img.rbEntries >= n {
			if run == 0 {
				start = i
			}
			return start, nil
		}
		free, err := img.isFree(i)
		if err != nil {
			return 0, err
		}
		if !free {
			run = 0
			continue
		}
		if run == 0 {
			start = i
		}
		run++
		if run == n {
			return start, nil
		}
	}
}

// newRefblock creates the refcount block for table index ti, needed by a
// candidate allocation starting at host cluster start. Like QEMU's
// alloc_refcount_block it takes the lowest free cluster, so that new blocks
// pile up before the candidate instead of splitting it: either inside a
// range whose block exists (the block is counted there), or, when that
// range has no block either, as that range's self-describing block.
// Beyond the table, the table grows (at the uncovered candidate area).
func (img *Image) newRefblock(ti, start int64) error {
	img.event(block.EventRefblockAlloc)
	if ti >= int64(len(img.rt)) {
		return img.growRefcountTable(max(start, int64(len(img.rt))*img.rbEntries))
	}
	f, err := img.findFree(1)
	if err != nil {
		return err
	}
	tf := f / img.rbEntries
	if tf >= int64(len(img.rt)) {
		return img.growRefcountTable(max(f, int64(len(img.rt))*img.rbEntries))
	}
	fOff, err := img.refblockOffset(tf)
	if err != nil {
		return err
	}
	img.noteEnd((f + 1) << img.clusterBits)
	if fOff == 0 {
		return img.installRefblock(tf, f, true)
	}
	if err := img.addRefcount(f, 1); err != nil {
		return err
	}
	return img.installRefblock(ti, f, false)
}

// installRefblock writes an empty refcount block for table index ti at host
// cluster at (counting itself when self), then the table entry. self is the
// case where the block lies in the range it describes; otherwise the
// caller has already counted it in the block that covers it.
func (img *Image) installRefblock(ti, at int64, self bool) error {
	if self {
		if err := img.markDirty(); err != nil {
			return err
		}
	}
	e, err := img.rbc.getEmpty(at << img.clusterBits)
	if err != nil {
		return err
	}
	if self {
		img.setRefcountAt(e.data, at%img.rbEntries, 1)
	}
	// The block itself (and the refcount that protects it) reach the disk
	// before the table entry that makes it live.
	img.event(block.EventRefblockAllocWrite)
	if err := img.rbc.writeEntry(e); err != nil {
		return err
	}
	if _, err := img.rbc.flush(); err != nil {
		return err
	}
	if err := img.barrier(); err != nil {
		return err
	}
	img.rt[ti] = uint64(at << img.clusterBits)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.rt[ti])
	img.event(block.EventRefblockAllocHookup)
	if err := img.writeMeta(b[:], int64(img.hdr.rtOff)+ti*8); err != nil {
		return fmt.Errorf("writing refcount table entry %d: %w", ti, err)
	}
	return nil
}

// growRefcountTable moves the refcount table to a larger one at host cluster
// a (beyond everything the current table covers), together with the new
// refcount blocks that describe the new table and themselves. Order: blocks,
// table, barrier, header, barrier, then the old table is freed.
//
// The sizes are found by iteration: k new blocks and tc table clusters at a must cover clusters up to
// a+k+tc, and the table must have an entry for each block; each round
// enlarges whichever falls short until both fit (the table also grows by
// at least half, so growth is amortised). The new structures are written
// directly, not through the cache: nothing refers to them until the
// header's refcount_table_offset and refcount_table_clusters (bytes 48-59)
// are rewritten in one write.
func (img *Image) growRefcountTable(a int64) error {
	E := img.rbEntries
	cs := img.clusterSize
	old := int64(len(img.rt))
	firstBlk := a / E
	k, tc := int64(1), int64(1)
	var entries int64
	for {
		last := a + k + tc - 1
		entries = max(last/E+1, old+old/2, old+1)
		ntc := (entries*8 + cs - 1) / cs
		nk := (a+k+ntc-1)/E - firstBlk + 1
		if ntc == tc && nk == k {
			break
		}
		tc, k = max(tc, ntc), max(k, nk)
	}
	entries = tc * cs / 8
	if tc*cs > maxRefcountTable {
		return fmt.Errorf("refcount table would exceed %d bytes", maxRefcountTable)
	}
	metaEnd := a + k + tc
	img.noteEnd(metaEnd * cs)
	blk := make([]byte, cs)
	for j := int64(0); j < k; j++ {
		clear(blk)
		base := (firstBlk + j) * E
		for c := max(a, base); c < min(metaEnd, base+E); c++ {
			img.setRefcountAt(blk, c-base, 1)
		}
		if err := img.writeMeta(blk, (a+j)*cs); err != nil {
			return fmt.Errorf("writing new refcount block: %w", err)
		}
	}
	table := make([]uint64, entries)
	copy(table, img.rt)
	for j := int64(0); j < k; j++ {
		table[firstBlk+j] = uint64((a + j) * cs)
	}
	raw := make([]byte, tc*cs)
	for i, v := range table {
		binary.BigEndian.PutUint64(raw[i*8:], v)
	}
	tableOff := (a + k) * cs
	img.event(block.EventRefblockAllocWriteTable)
	if err := img.writeMeta(raw, tableOff); err != nil {
		return fmt.Errorf("writing new refcount table: %w", err)
	}
	if err := img.barrier(); err != nil {
		return err
	}
	oldOff, oldClusters := int64(img.hdr.rtOff), int64(img.hdr.rtClusters)
	var hb [12]byte
	binary.BigEndian.PutUint64(hb[0:], uint64(tableOff))
	binary.BigEndian.PutUint32(hb[8:], uint32(tc))
	img.event(block.EventRefblockAllocSwitchTable)
	if err := img.writeMeta(hb[:], 48); err != nil {
		return fmt.Errorf("updating refcount table location in header: %w", err)
	}
	if err := img.barrier(); err != nil {
		return err
	}
	img.hdr.rtOff, img.hdr.rtClusters = uint64(tableOff), uint32(tc)
	img.rt = table
	for c := oldOff / cs; c < oldOff/cs+oldClusters; c++ {
		if err := img.addRefcount(c, -1); err != nil {
			return fmt.Errorf("freeing old refcount table: %w", err)
		}
	}
	return nil
}

// noteEnd raises fileEnd to cover newly allocated space; it never lowers
// it. fileEnd is atomic because classify's sanity check also runs without
// mu (cowRead, from writeNewClusters); the raises themselves happen under
// mu.
func (img *Image) noteEnd(end int64) {
	for {
		cur := img.fileEnd.Load()
		if end <= cur || img.fileEnd.CompareAndSwap(cur, end) {
			return
		}
	}
}

// freeClustersOrLeak is freeClusters where QEMU calls qcow2_free_clusters,
// which returns nothing: a failure is reported (in its words) and the
// clusters not freed stay allocated, a leak check -r leaks reclaims. The
// metadata that referenced them is gone already, so nothing is lost.
func (img *Image) freeClustersOrLeak(off, n int64) {
	if err := img.freeClusters(off, n); err != nil {
		msg := "qcow2_free_clusters failed: " + strerror(err)
		if img.warn != nil {
			img.warn(msg)
		} else {
			fmt.Fprintln(os.Stderr, msg)
		}
	}
}

// freeClusters drops one reference to each of n host clusters from off.
// Callers make sure the metadata that referenced them is on disk first:
// a cluster freed too early could be reallocated and overwritten while a
// table on disk still points at it.
func (img *Image) freeClusters(off, n int64) error {
	img.event(block.EventClusterFree)
	for c := off >> img.clusterBits; c < (off>>img.clusterBits)+n; c++ {
		if err := img.addRefcount(c, -1); err != nil {
			return err
		}
	}
	return nil
}

// loadRefcountTable reads the refcount table named by the header, whole:
// parseHeader bounded it by maxRefcountTable (8 MiB), so it is always kept
// in memory.
func (img *Image) loadRefcountTable() error {
	n := int64(img.hdr.rtClusters) * img.clusterSize / 8
	raw := make([]byte, n*8)
	if err := img.readMeta(raw, int64(img.hdr.rtOff)); err != nil {
		return fmt.Errorf("reading refcount table: %w", err)
	}
	img.rt = make([]uint64, n)
	for i := range img.rt {
		img.rt[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	return nil
}
