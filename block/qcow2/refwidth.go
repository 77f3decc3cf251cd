package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// refcountLayout sizes a refcount structure placed at host cluster a (the
// first cluster past everything it must count) with e entries per block
// and cs-byte clusters: k refcount blocks and tc table clusters, enough to
// count clusters [0, a+k+tc), the structure itself included.
func refcountLayout(a, e, cs int64) (k, tc int64) {
	k, tc = 1, 1
	for {
		total := a + k + tc
		nk := (total + e - 1) / e
		ntc := (nk*8 + cs - 1) / cs
		if nk <= k && ntc <= tc {
			return k, tc
		}
		k, tc = max(k, nk), max(tc, ntc)
	}
}

// changeRefcountWidth rewrites the refcount structure with entries of
// newBits bits (spec "Header", refcount_order; version 3 only), as
// qemu-img amend -o refcount_bits=N. Every refcount is copied as it is,
// except that the clusters of the old structure (its blocks and table)
// are counted free: nothing references them once the header names the
// new one.
//
// Crash ordering: the new blocks and table are written after the end of
// everything in use (the old structure does not count them, so until the
// switch they are unused space), then synced; the header is the switch
// (one write, synced; the fields that change, table offset and size at
// bytes 48-59 and refcount_order at 96-99, share the first sector). A
// crash before it leaves the old structure in force, after it the new
// one; no cluster in use is ever counted free.
//
// A refcount that does not fit the new width fails the change before
// anything is written, in QEMU's words. progress is called after each new
// block. Caller: Amend (the image is quiesced here).
func (img *Image) changeRefcountWidth(newBits uint32, progress func(done, total int64)) error {
	img.quiesce()
	defer img.unquiesce()
	if err := img.clearDirty(); err != nil {
		return err
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	cs := img.clusterSize
	// Clusters of the old structure, with how often it uses each.
	oldMeta := map[int64]uint64{}
	for c := int64(0); c < int64(img.hdr.rtClusters); c++ {
		oldMeta[int64(img.hdr.rtOff)/cs+c]++
	}
	for ti := range img.rt {
		off, err := img.refblockOffset(int64(ti))
		if err != nil {
			return err
		}
		if off != 0 {
			oldMeta[off/cs]++
		}
	}
	refcount := func(c int64) (uint64, error) {
		rc, err := img.getRefcount(c)
		if err != nil {
			return 0, err
		}
		if m := oldMeta[c]; m > 0 {
			if rc < m {
				return 0, corruptf("refcount block or table cluster %d has refcount %d", c, rc)
			}
			rc -= m
		}
		return rc, nil
	}
	newMax := ^uint64(0) >> (64 - newBits)
	// The clusters to count: up to the last one with a refcount (and at
	// least the file's clusters), checked against the new width.
	end := (img.fileEnd.Load() + cs - 1) / cs
	for ti := range img.rt {
		if off, err := img.refblockOffset(int64(ti)); err != nil || off == 0 {
			if err != nil {
				return err
			}
			continue // a missing block counts every cluster free
		}
		for c := int64(ti) * img.rbEntries; c < int64(ti+1)*img.rbEntries; c++ {
			rc, err := refcount(c)
			if err != nil {
				return err
			}
			if rc > newMax {
				return fmt.Errorf("Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d", newBits, c*cs, rc)
			}
			if rc != 0 {
				end = max(end, c+1)
			}
		}
	}
	entries := cs * 8 / int64(newBits)
	k, tc := refcountLayout(end, entries, cs)
	if tc*cs > maxRefcountTable {
		return fmt.Errorf("the refcount table for %d-bit refcounts would exceed %d bytes", newBits, maxRefcountTable)
	}
	total := end + k + tc
	table := make([]byte, tc*cs)
	blk := make([]byte, cs)
	for j := int64(0); j < k; j++ {
		clear(blk)
		for c := j * entries; c < min((j+1)*entries, total); c++ {
			rc := uint64(1) // the new structure's own clusters
			if c < end {
				var err error
				if rc, err = refcount(c); err != nil {
					return err
				}
			}
			setRefcountEntry(blk, c-j*entries, newBits, rc)
		}
		off := (end + j) * cs
		if err := img.writeMeta(blk, off); err != nil {
			return fmt.Errorf("writing refcount block: %w", err)
		}
		binary.BigEndian.PutUint64(table[j*8:], uint64(off))
		if progress != nil {
			progress(j+1, k)
		}
	}
	tableOff := (end + k) * cs
	if err := img.writeMeta(table, tableOff); err != nil {
		return fmt.Errorf("writing refcount table: %w", err)
	}
	if err := img.sync(); err != nil {
		return err
	}
	h := img.hdr
	old := *h
	h.refcountOrder = uint32(bits.TrailingZeros32(newBits))
	h.rtOff, h.rtClusters = uint64(tableOff), uint32(tc)
	if err := img.writeHeader(); err != nil {
		*h = old
		return err
	}
	img.noteEnd(total * cs)
	img.rcBits = newBits
	img.rbEntries = entries
	img.rbc.reset()
	img.freeHint, img.freeByte = 0, 0
	return img.loadRefcountTable()
}
