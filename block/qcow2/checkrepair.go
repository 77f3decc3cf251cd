package qcow2

import (
	"errors"
	"fmt"
	"slices"

	"github.com/petrel-vmm/petrel/block"
)

// check implements Check under img.mu, in the steps and words of QEMU's
// qcow2_check_refcounts, which qemu-img check prints and iotests (039,
// 138, 214) compare:
//
//  1. scan counts every reference the metadata makes;
//  2. every refcount is compared with its references without fixing
//     anything ("ERROR cluster N refcount=A reference=B" for too few,
//     "Leaked cluster ..." for too many);
//  3. a referenced cluster with refcount 0 (or a refcount block that
//     cannot be read, or one something else references too) needs the refcount structures rebuilt: with
//     RepairAll, "Rebuilding refcount structure", new structures counting
//     the old ones too, then a leak repair that frees the old ones
//     ("Repairing cluster N refcount=1 reference=0"; not counted as
//     fixed, as in QEMU), and every mismatch of step 2 counts as fixed;
//     with RepairLeaks it is a check error. Otherwise a repair compares
//     again, fixing in place what the mode allows ("Repairing cluster
//     ..."; refcounts only move towards the references, so a repair never
//     frees a referenced cluster);
//  4. copied flags are compared with refcount == 1, and fixed with
//     RepairAll, or RepairLeaks when nothing else is left wrong
//     ("Repairing OFLAG_COPIED ...");
//  5. with RepairAll the snapshot table is rewritten if entries need it.
//
// Entries that cannot be valid (misaligned, beyond the file) found by the
// scan make RepairAll drop them and rebuild the refcounts from scratch.
// The result holds what is still wrong and how much was fixed; qemu-img
// (petrel img check) then checks again to report the repaired image.
func (img *Image) check(mode block.RepairMode) (block.CheckResult, error) {
	var res block.CheckResult
	s, snaps, tableSize, err := img.scan(&res, true, mode == block.RepairAll)
	if err != nil {
		return res, err
	}
	cs := img.clusterSize
	res.TotalClusters = (int64(img.hdr.size) + cs - 1) / cs
	invalidEntries := res.Corruptions - s.tableFixes - s.overflows
	beforeCompare := res
	beforeCompare.Messages = nil
	sharedBlocks := s.sharedRefblocks()
	rebuild, err := img.compareRefcounts(s, &res, block.RepairNone, true)
	if err != nil {
		return res, err
	}
	rebuild = rebuild || sharedBlocks
	switch {
	case mode == block.RepairAll && (rebuild || invalidEntries > 0):
		if err := img.rebuildAll(&res, rebuild, s.fileEnd, s.tableFixes); err != nil {
			return res, err
		}
	case mode != block.RepairNone && rebuild:
		// QEMU gives up with -EIO: qemu-img prints "Check failed:
		// Input/output error" and no report.
		res.Messages = append(res.Messages, "ERROR need to rebuild refcount structures")
		res.CheckErrors++
		return res, errNeedRebuild
	case mode != block.RepairNone && (res.Leaks > 0 || res.Corruptions > 0):
		msgs := res.Messages
		res = beforeCompare
		res.Messages = msgs
		if _, err := img.compareRefcounts(s, &res, mode, false); err != nil {
			return res, err
		}
		if err := img.flushLocked(); err != nil {
			return res, err
		}
	}
	// -r leaks fixes copied flags too when nothing else is left wrong,
	// as the refcounts can then be trusted (check_oflag_copied).
	fixCopied := mode == block.RepairAll ||
		mode == block.RepairLeaks && res.CheckErrors == 0 && res.Corruptions == 0 && res.Leaks == 0
	if err := img.fixCopiedFlags(fixCopied, &res); err != nil {
		return res, err
	}
	// The snapshot table is rewritten (completing entries, dropping
	// excess extra data) only once the refcounts it allocates from are
	// right, as qcow2_check_fix_snapshot_table.
	if mode == block.RepairAll && s.tableFixes > 0 {
		kept := snaps[:0:0]
		for i, sn := range snaps {
			if !slices.Contains(s.dropped, i) {
				kept = append(kept, sn)
			}
		}
		if err := img.writeSnapshots(kept, tableSize); err != nil {
			return res, fmt.Errorf("rewriting the snapshot table: %w", err)
		}
		res.Corruptions -= s.tableFixes
		res.CorruptionsFixed += s.tableFixes
	}
	if mode != block.RepairNone {
		if err := img.flushLocked(); err != nil {
			return res, err
		}
	}
	return res, nil
}

// errNeedRebuild fails a check -r leaks that finds a referenced cluster
// with refcount 0, in the words of QEMU's -EIO.
var errNeedRebuild = errors.New("Input/output error")

// rebuildAll is check's rebuild: entries that cannot be valid (judged
// against fileEnd, the file size the scan saw) are dropped, the refcount
// structures are built anew from the references, and what the first
// comparison found counts as fixed, less what a fresh scan still finds and
// the tableFixes snapshot table corrections still to be written. With qemuRebuild (a refcount of 0 where there are references,
// QEMU's trigger) it says so and keeps the old structures counted, freeing
// them through a leak repair whose lines it prints, as QEMU's rebuild does.
func (img *Image) rebuildAll(res *block.CheckResult, qemuRebuild bool, fileEnd int64, tableFixes int) error {
	if qemuRebuild {
		res.Messages = append(res.Messages, "Rebuilding refcount structure")
	}
	if err := img.dropInvalidEntries(fileEnd); err != nil {
		return fmt.Errorf("clearing invalid entries: %w", err)
	}
	if err := img.rebuildRefcounts(qemuRebuild); err != nil {
		return fmt.Errorf("rebuilding refcounts: %w", err)
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	var fresh block.CheckResult
	s, _, _, err := img.scan(&fresh, true, true)
	if err != nil {
		return err
	}
	remaining := fresh.Corruptions - s.tableFixes + tableFixes
	scanMessages := fresh.Messages
	leftBroken, err := img.compareRefcounts(s, &fresh, block.RepairLeaks, true)
	if err != nil {
		return err
	}
	if leftBroken {
		fresh.Messages = append(fresh.Messages, "ERROR rebuilt refcount structure is still broken")
	}
	// What the rebuild could not fix is reported once more after the
	// leak repair, as qemu-img prints it (iotest 271's unaligned data
	// cluster: its ERROR line appears before and after the "Repairing"
	// lines).
	if qemuRebuild {
		fresh.Messages = append(fresh.Messages, scanMessages...)
	}
	res.Messages = append(res.Messages, fresh.Messages...)
	oldCorruptions, oldLeaks := res.Corruptions, res.Leaks
	res.Corruptions, res.Leaks = remaining, 0
	res.CorruptionsFixed += max(oldCorruptions-res.Corruptions, 0)
	res.LeaksFixed += oldLeaks
	// Leaks the leak repair could not fix were made by the rebuild.
	res.Leaks += fresh.Leaks
	return img.flushLocked()
}

// sharedRefblocks reports refcount blocks that something else references
// too ("ERROR refcount block N refcount=R", a corruption, as QEMU's
// check_refblocks): fixing the count in place would leave the block
// shared, so the refcount structures must be rebuilt (the result).
func (s *refScan) sharedRefblocks() bool {
	img := s.img
	shared := false
	for i, ent := range img.rt {
		off := ent & reftOffsetMask
		c := off >> img.clusterBits
		if off == 0 || off&uint64(img.clusterSize-1) != 0 || c >= uint64(len(s.refs)) {
			continue
		}
		if s.refs[c] != 1 {
			s.res.Corruptions++
			s.res.Messages = append(s.res.Messages, fmt.Sprintf("ERROR refcount block %d refcount=%d", i, s.refs[c]))
			shared = true
		}
	}
	return shared
}

// compareRefcounts compares every refcount with s's reference counts, as
// QEMU's compare_refcounts, appending its lines to res.Messages: with
// RepairNone it only reports; with RepairLeaks it lowers refcounts that are
// too high, with RepairAll it also raises those that are too low but not 0
// ("Repairing cluster ..."). A referenced cluster with refcount 0, or a
// refcount block that cannot be used, asks for a rebuild (the result).
// withBlockErrors reports unusable refcount blocks (the first pass only).
// res.ImageEndOffset becomes the end of the last cluster in use or
// counted.
func (img *Image) compareRefcounts(s *refScan, res *block.CheckResult, mode block.RepairMode, withBlockErrors bool) (rebuild bool, err error) {
	cs := img.clusterSize
	last := int64(0)
	compare := func(i int64, rc uint64) error {
		want := uint64(0)
		if i < int64(len(s.refs)) {
			want = uint64(s.refs[i])
		}
		if rc != 0 || want != 0 {
			last = i
		}
		if rc == want {
			return nil
		}
		var fixed *int
		switch {
		case rc == 0:
			rebuild = true
		case rc > want && mode >= block.RepairLeaks:
			fixed = &res.LeaksFixed
		case rc < want && mode == block.RepairAll:
			fixed = &res.CorruptionsFixed
		}
		verb := "Leaked"
		switch {
		case fixed != nil:
			verb = "Repairing"
		case rc < want:
			verb = "ERROR"
		}
		res.Messages = append(res.Messages, fmt.Sprintf("%s cluster %d refcount=%d reference=%d", verb, i, rc, want))
		if fixed != nil {
			// Only towards the references: never below them, so no
			// referenced cluster is freed. A refcount that cannot be
			// changed (one the width cannot hold) stays counted as
			// found, as in QEMU.
			if img.addRefcount(i, int64(want)-int64(rc)) == nil {
				*fixed++
				return nil
			}
		}
		if rc < want {
			res.Corruptions++
		} else {
			res.Leaks++
		}
		return nil
	}
	// Every cluster a refcount block describes (leaks may lie beyond the
	// end of the file), and every referenced cluster.
	E := img.rbEntries
	for ti := int64(0); ti < max(int64(len(img.rt)), (int64(len(s.refs))+E-1)/E); ti++ {
		off, err := img.refblockOffset(ti)
		if err == nil && off != 0 && off>>img.clusterBits >= int64(len(s.refs)) {
			err = corruptf("refcount block %d at %#x is outside the image", ti, off)
		}
		if err != nil {
			if withBlockErrors {
				s.errorf(true, "%v", err)
			}
			rebuild = true
			off = 0
		}
		for j := int64(0); j < E; j++ {
			i := ti*E + j
			if off == 0 {
				if i >= int64(len(s.refs)) {
					break
				}
				if err := compare(i, 0); err != nil {
					return rebuild, err
				}
				continue
			}
			e, err := img.rbc.get(off)
			if err != nil {
				s.errorf(false, "reading refcount block %d: %v", ti, err)
				break
			}
			if err := compare(i, img.refcountAt(e.data, j)); err != nil {
				return rebuild, err
			}
		}
	}
	res.ImageEndOffset = (last + 1) * cs
	return rebuild, nil
}

// fixCopiedFlags compares the copied flag of every active L1 and L2 entry
// with refcount == 1, as QEMU's check_oflag_copied: each mismatch is an
// "ERROR OFLAG_COPIED ..." corruption, or with fix a "Repairing
// OFLAG_COPIED ..." corrected and counted as fixed. Compressed entries
// never carry the flag and are skipped, as are entries check already
// reported as invalid.
func (img *Image) fixCopiedFlags(fix bool, res *block.CheckResult) error {
	verb := "ERROR"
	if fix {
		verb = "Repairing"
	}
	found := func(format string, a ...any) {
		res.Messages = append(res.Messages, verb+" "+fmt.Sprintf(format, a...))
		if fix {
			res.CorruptionsFixed++
		} else {
			res.Corruptions++
		}
	}
	cs := img.clusterSize
	for i, ent := range img.l1 {
		l2off := int64(ent & l1OffsetMask)
		if l2off == 0 || l2off&(cs-1) != 0 {
			continue
		}
		rc, err := img.getRefcount(l2off >> img.clusterBits)
		if err != nil {
			return err
		}
		want := ent &^ oflagCopied
		if rc == 1 {
			want |= oflagCopied
		}
		if want != ent {
			found("OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", i, ent, rc)
			if fix {
				img.l1[i] = want
				if err := img.writeL1Entry(int64(i)); err != nil {
					return err
				}
			}
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		for j := int64(0); j < img.l2Entries; j++ {
			l2e, _ := img.l2Entry(e.data, j)
			host := int64(l2e & l2OffsetMask)
			if l2e&oflagCompressed != 0 || host == 0 || host&(cs-1) != 0 {
				continue
			}
			rc := uint64(1) // an external data cluster counts as owned
			if !img.external {
				if rc, err = img.getRefcount(host >> img.clusterBits); err != nil {
					return err
				}
			}
			want := l2e &^ oflagCopied
			if rc == 1 {
				want |= oflagCopied
			}
			if want != l2e {
				found("OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", l2e, rc)
				if fix {
					img.setL2Entry(e.data, j, want)
					e.dirty = true
				}
			}
		}
	}
	return nil
}
