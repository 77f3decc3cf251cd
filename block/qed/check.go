package qed

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// Check verifies the invariants of qed_spec.txt "Consistency checking":
// every cluster referenced at most once, offsets aligned and inside the
// file, whole tables inside the file; unreferenced clusters are leaks.
// With RepairAll, bad entries are cleared (corruptions fixed; the data they
// pointed to is lost, as in QEMU); with either repair mode, leaked clusters
// at the end of the file are truncated away, and the need-check bit is
// cleared when nothing remains corrupt. QED has no refcounts to lower, so
// a leak in the middle of the file stays (counted, not fixed) until the
// image is rewritten, by qemu-img convert for instance.
func (img *Image) Check(mode block.RepairMode) (block.CheckResult, error) {
	if mode != block.RepairNone && img.ro {
		return block.CheckResult{}, fmt.Errorf("repairing %s: image opened read-only", img.path)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.check(mode)
}

// usedSet is a bitmap of host clusters referenced so far, one bit per
// cluster of the file, indexed by host offset / cluster size.
type usedSet []uint64

// mark sets cluster c's bit; fresh is false if it was already set, i.e. c
// is referenced a second time (spec "Consistency checking", invariant 1).
func (u usedSet) mark(c int64) (fresh bool) {
	w, b := c/64, uint(c%64)
	if u[w]&(1<<b) != 0 {
		return false
	}
	u[w] |= 1 << b
	return true
}

// has reports whether cluster c is referenced.
func (u usedSet) has(c int64) bool { return u[c/64]&(1<<uint(c%64)) != 0 }

// check does the work of Check; caller holds mu (or is opening the image).
// It works from the file as it is now (Stat), not fileSize, so clusters
// appended by a crashed writer count as leaks. Counters follow QEMU's
// qed-check: TotalClusters covers image_size; AllocatedClusters and
// FragmentedClusters count data entries, bad ones included.
func (img *Image) check(mode block.RepairMode) (block.CheckResult, error) {
	var res block.CheckResult
	fix := mode != block.RepairNone
	fixCorrupt := mode == block.RepairAll
	st, err := img.f.Stat()
	if err != nil {
		return res, fmt.Errorf("checking %s: %w", img.path, err)
	}
	cs := img.clusterSize
	fileSize := st.Size()
	nclusters := (fileSize + cs - 1) / cs
	used := make(usedSet, nclusters/64+1)
	tableClusters := img.tableBytes / cs
	res.TotalClusters = (int64(img.hdr.ImageSize) + cs - 1) / cs
	for c := int64(0); c < int64(img.hdr.HeaderSize); c++ {
		used.mark(c)
	}
	markTable := func(off int64) bool {
		ok := true
		for c := off / cs; c < off/cs+tableClusters; c++ {
			ok = used.mark(c) && ok
		}
		return ok
	}
	markTable(int64(img.hdr.L1TableOffset))
	validTable := func(off uint64) bool {
		return off%uint64(cs) == 0 && off >= uint64(img.hdr.HeaderSize)*uint64(cs) &&
			off <= uint64(fileSize) && uint64(img.tableBytes) <= uint64(fileSize)-off
	}
	validData := func(off uint64) bool {
		return off%uint64(cs) == 0 && off >= uint64(img.hdr.HeaderSize)*uint64(cs) && off < uint64(fileSize)
	}
	// Pass 1 claims every L2 table, pass 2 the data clusters, so that a
	// data entry pointing into a table is the one blamed (and cleared),
	// not the table.
	goodTables := make([]bool, len(img.l1))
	for i, l2off := range img.l1 {
		if l2off == 0 {
			continue
		}
		if validTable(l2off) && markTable(int64(l2off)) {
			goodTables[i] = true
			continue
		}
		res.Corruptions++
		res.Messages = append(res.Messages, fmt.Sprintf("ERROR L1 entry %d: invalid or duplicate L2 table offset %#x", i, l2off))
		if fixCorrupt {
			if err := img.writeL1Entry(int64(i), 0); err != nil {
				return res, err
			}
			res.CorruptionsFixed++
		}
	}
	for i, l2off := range img.l1 {
		if !goodTables[i] {
			continue
		}
		t, err := img.readTable(int64(l2off))
		if err != nil {
			res.CheckErrors++
			res.Messages = append(res.Messages, fmt.Sprintf("ERROR reading L2 table at %#x: %v", l2off, err))
			continue
		}
		// Allocation and fragmentation are counted as qemu's qed-check
		// does: every data entry, fragmented when not right after the
		// previous one of the same table.
		last := uint64(0)
		for j, e := range t {
			if e == 0 || e == entryZero {
				continue
			}
			res.AllocatedClusters++
			if last != 0 && last+uint64(cs) != e {
				res.FragmentedClusters++
			}
			last = e
			if validData(e) && used.mark(int64(e)/cs) {
				continue
			}
			res.Corruptions++
			res.Messages = append(res.Messages, fmt.Sprintf("ERROR L2 table %#x entry %d: invalid or duplicate cluster offset %#x", l2off, j, e))
			if fixCorrupt {
				var zero [8]byte
				if _, err := img.f.WriteAt(zero[:], int64(l2off)+8*int64(j)); err != nil {
					return res, fmt.Errorf("clearing L2 entry: %w", err)
				}
				res.CorruptionsFixed++
			}
		}
	}
	img.cache.drop()
	lastUsed := int64(0)
	for c := int64(0); c < nclusters; c++ {
		if used.has(c) {
			lastUsed = c
		} else {
			res.Leaks++
		}
	}
	if fix && res.Leaks > 0 && lastUsed+1 < nclusters {
		if err := img.f.Truncate((lastUsed + 1) * cs); err != nil {
			return res, fmt.Errorf("truncating leaked clusters: %w", err)
		}
		res.LeaksFixed = int(nclusters - lastUsed - 1)
		img.fileSize = (lastUsed + 1) * cs
	}
	if fix && res.Corruptions == res.CorruptionsFixed && res.CheckErrors == 0 && img.hdr.Features&featNeedCheck != 0 {
		img.hdr.Features &^= featNeedCheck
		if err := img.writeHeader(); err != nil {
			return res, err
		}
	} else if fix && (res.CorruptionsFixed > 0 || res.LeaksFixed > 0) {
		if err := img.sync(); err != nil {
			return res, err
		}
	}
	return res, nil
}
