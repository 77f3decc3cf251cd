package qcow2

import (
	"errors"
	"fmt"
)

// expandZeroClusters rewrites every zero-flagged L2 entry (spec "Cluster
// mapping", bit 0 of a standard L2 entry, version 3 only) reachable from
// the active L1 table and the snapshots' L1 tables into something version
// 2 reads as zeroes, as QEMU's qcow2_expand_zero_clusters before a
// downgrade:
//
//   - an unallocated zero cluster of an image without a backing file
//     becomes unallocated (which reads as zeroes there);
//   - one over a backing file gets a new cluster filled with zeroes;
//   - a preallocated zero cluster has its host cluster zero-filled and
//     keeps it, unless that cluster is also referenced from elsewhere than
//     this L2 table (a snapshot's L2 table with data): then it gets a new
//     zero-filled cluster instead and drops its reference to the old one.
//
// An L2 table shared by several trees (refcount N) is changed in place:
// every tree sees the same entries, so a new cluster gets refcount N and
// the copied flag only when N is 1 (spec "Cluster mapping": copied means
// refcount exactly 1).
//
// Order per table: the new clusters' refcounts (in the cache, flushed
// before the L2 table by the cache dependency) and zeroes are written and
// synced, then the L2 table is written, then the old clusters given up are
// released. A crash leaves the old entries (the zeroes are unused) or the
// new ones, and at worst leaked clusters.
//
// progress is called after each L1 entry of every table. Caller holds the
// image quiesced; extended L2 images are refused before (downgrade).
func (img *Image) expandZeroClusters(snaps []snapshot, progress func(done, total int64)) error {
	tables := [][]uint64{img.l1}
	total := int64(len(img.l1))
	for _, sn := range snaps {
		if err := img.validateSnapshotL1(sn); err != nil {
			// qemu-img prints the table's fault, then the expansion's
			// failure as an errno (iotest 080): two messages.
			errno := "Invalid argument"
			if err.Error() == "Snapshot L1 table too large" {
				errno = "File too large"
			}
			return errors.Join(err, errors.New("Failed to turn zero into data clusters: "+errno))
		}
		l1, err := img.loadL1(int64(sn.l1Off), sn.l1Size)
		if err != nil {
			return fmt.Errorf("Failed to turn zero into data clusters: %w", err)
		}
		tables = append(tables, l1)
		total += int64(len(l1))
	}
	var done int64
	for _, l1 := range tables {
		for i := range l1 {
			l2off, err := img.l2TableOffset(l1, int64(i))
			if err != nil {
				return err
			}
			if l2off != 0 {
				if err := img.expandZeroTable(l2off); err != nil {
					return fmt.Errorf("Failed to turn zero into data clusters: %w", err)
				}
			}
			done++
			if progress != nil {
				progress(done, total)
			}
		}
	}
	return nil
}

// expandZeroTable expands the zero entries of the L2 table at l2off (see
// expandZeroClusters).
func (img *Image) expandZeroTable(l2off int64) error {
	e, err := img.l2c.get(l2off)
	if err != nil {
		return err
	}
	var zeroIdx []int64
	for j := int64(0); j < img.l2Entries; j++ {
		if l2e, _ := img.l2Entry(e.data, j); l2e&oflagZero != 0 && l2e&oflagCompressed == 0 {
			zeroIdx = append(zeroIdx, j)
		}
	}
	if len(zeroIdx) == 0 {
		return nil
	}
	tableRefs, err := img.getRefcount(l2off >> img.clusterBits)
	if err != nil {
		return err
	}
	if tableRefs == 0 {
		return corruptf("L2 table at %#x is referenced but has refcount 0", l2off)
	}
	newEntry := map[int64]uint64{}
	var release []uint64 // host clusters to drop tableRefs references from
	for _, j := range zeroIdx {
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		l2e, _ := img.l2Entry(e.data, j)
		host := int64(l2e & l2OffsetMask)
		if host != 0 {
			rc, err := img.getRefcount(host >> img.clusterBits)
			if err != nil {
				return err
			}
			if rc == tableRefs {
				if err := writeZeroRange(img.f, host, img.clusterSize); err != nil {
					return err
				}
				newEntry[j] = l2e &^ oflagZero
				continue
			}
			release = append(release, uint64(host))
		} else if img.backing == nil {
			newEntry[j] = 0
			continue
		}
		off, err := img.allocClusters(1)
		if err != nil {
			return err
		}
		if tableRefs > 1 {
			if err := img.addRefcount(off>>img.clusterBits, int64(tableRefs)-1); err != nil {
				return err
			}
		}
		if err := writeZeroRange(img.f, off, img.clusterSize); err != nil {
			return err
		}
		ent := uint64(off)
		if tableRefs == 1 {
			ent |= oflagCopied
		}
		newEntry[j] = ent
	}
	// The zeroes and the new refcounts are durable before the entries
	// that point at them.
	if _, err := img.rbc.flush(); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	e, err = img.l2c.get(l2off)
	if err != nil {
		return err
	}
	for j, v := range newEntry {
		img.setL2Entry(e.data, j, v)
	}
	if err := img.l2c.writeThrough(e); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	for _, host := range release {
		if err := img.addRefcount(int64(host)>>img.clusterBits, -int64(tableRefs)); err != nil {
			return err
		}
	}
	return nil
}
