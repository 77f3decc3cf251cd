package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-vmm/petrel/block"
)

// updateTree adds addend to the refcount of every L2 table and data
// cluster reachable from l1 (a compressed cluster counts once for each
// host cluster its bytes touch, as QEMU counts them) (QEMU's qcow2_update_snapshot_refcount); with
// active, the copied flags of l1 (in place) and its L2 tables are then set
// from the resulting refcounts. On failure (a refcount would overflow its
// width, corrupt metadata) the changes made so far are undone, so the
// refcounts stay consistent.
func (img *Image) updateTree(l1 []uint64, addend int64, active bool) error {
	var done []int64
	err := img.walkTree(l1, addend, active, &done)
	if err == nil || addend == 0 {
		return err
	}
	for _, c := range done {
		if uerr := img.addRefcount(c, -addend); uerr != nil {
			return fmt.Errorf("%w (undoing refcount changes: %v)", err, uerr)
		}
	}
	if active {
		if uerr := img.walkTree(l1, 0, true, nil); uerr != nil {
			return fmt.Errorf("%w (restoring copied flags: %v)", err, uerr)
		}
	}
	return err
}

// walkTree is updateTree's single pass; every cluster whose refcount it
// changed is appended to done. With addend 0 it changes no refcount and
// only recomputes copied flags (active), which is how the flags are set
// after a snapshot operation. An L2 table reaching refcount 0 is dropped
// from the cache so that its dirty copy is never written over a cluster
// that is free again.
func (img *Image) walkTree(l1 []uint64, addend int64, active bool, done *[]int64) error {
	add := func(c int64) error {
		if err := img.addRefcount(c, addend); err != nil {
			return err
		}
		*done = append(*done, c)
		return nil
	}
	cs := img.clusterSize
	for i, ent := range l1 {
		l2off, err := img.l2TableOffset(l1, int64(i))
		if err != nil || l2off == 0 {
			if err != nil {
				return err
			}
			continue
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		for j := int64(0); j < img.l2Entries; j++ {
			l2e, _ := img.l2Entry(e.data, j)
			if l2e&oflagCompressed != 0 {
				if addend != 0 {
					off, size := img.compressedRange(l2e)
					for c := off >> img.clusterBits; c <= (off+size-1)>>img.clusterBits; c++ {
						if err := add(c); err != nil {
							return err
						}
					}
				}
				continue
			}
			host := int64(l2e & l2OffsetMask)
			if host == 0 {
				continue
			}
			if host&(cs-1) != 0 {
				return corruptf("data cluster offset %#x is not cluster aligned", host)
			}
			if addend != 0 {
				if err := add(host >> img.clusterBits); err != nil {
					return err
				}
			}
			if active {
				rc, err := img.getRefcount(host >> img.clusterBits)
				if err != nil {
					return err
				}
				if want := withCopied(l2e, rc == 1); want != l2e {
					// The cache entry may have been evicted by refcount
					// reads of the other cache: fetch it again.
					if e, err = img.l2c.get(l2off); err != nil {
						return err
					}
					img.setL2Entry(e.data, j, want)
					e.dirty = true
				}
			}
		}
		if addend != 0 {
			if err := add(l2off >> img.clusterBits); err != nil {
				return err
			}
		}
		rc, err := img.getRefcount(l2off >> img.clusterBits)
		if err != nil {
			return err
		}
		if rc == 0 {
			img.l2c.drop(l2off)
		}
		if active {
			l1[i] = withCopied(ent, rc == 1)
		}
	}
	return nil
}

// clearCopied drops the copied flag from every entry of the tree l1 (in
// place) and of its L2 tables (in the cache, marked dirty). Clearing is
// always safe (spec "Cluster mapping": the flag may only claim refcount 1
// when it is true; a missing flag costs a copy-on-write), so it runs
// before the refcounts rise.
func (img *Image) clearCopied(l1 []uint64) error {
	for i, ent := range l1 {
		l2off, err := img.l2TableOffset(l1, int64(i))
		if err != nil {
			return err
		}
		if l2off == 0 {
			continue
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		for j := int64(0); j < img.l2Entries; j++ {
			if l2e, _ := img.l2Entry(e.data, j); l2e&oflagCopied != 0 {
				img.setL2Entry(e.data, j, l2e&^oflagCopied)
				e.dirty = true
			}
		}
		l1[i] = ent &^ oflagCopied
	}
	return nil
}

// withCopied returns an L1 or L2 entry with QCOW_OFLAG_COPIED set or
// cleared, the rest unchanged.
func withCopied(ent uint64, copied bool) uint64 {
	if copied {
		return ent | oflagCopied
	}
	return ent &^ oflagCopied
}

// writeActiveL1 writes the whole active L1 table. Its copied flags must
// agree with the refcounts on disk, so the caches (refcount blocks, then
// L2 tables) are flushed first. The L1 table is rewritten whole, in place
// at l1_table_offset; its size does not change here (growL1 moves it).
func (img *Image) writeActiveL1() error {
	if err := img.flushLocked(); err != nil {
		return err
	}
	raw := make([]byte, len(img.l1)*8)
	for i, v := range img.l1 {
		binary.BigEndian.PutUint64(raw[i*8:], v)
	}
	img.event(block.EventL1Update)
	if err := img.writeMeta(raw, int64(img.hdr.l1Off)); err != nil {
		return fmt.Errorf("writing L1 table: %w", err)
	}
	return nil
}

// Snapshots lists the internal snapshots in table order, as qemu-img
// snapshot -l prints them. DiskSize is each snapshot's virtual size (the
// current one for entries that lack the field).
func (img *Image) Snapshots() ([]block.SnapshotInfo, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	snaps, _, err := img.readSnapshots()
	if err != nil {
		return nil, err
	}
	out := make([]block.SnapshotInfo, len(snaps))
	for i, sn := range snaps {
		out[i] = block.SnapshotInfo{
			ID: listedString(sn.id, 128), Name: listedString(sn.name, 256), VMStateSize: int64(sn.vmState),
			Date:    time.Unix(int64(sn.dateSec), int64(sn.dateNsec)),
			VMClock: time.Duration(sn.vmClock), DiskSize: int64(sn.diskSize),
			ICount: int64(sn.icount), // ^0 (unknown) is -1
		}
	}
	return out, nil
}

// listedString is an ID or name as qcow2_snapshot_list hands it on: copied
// with pstrcpy into QEMUSnapshotInfo's id_str[128] or name[256], so cut at
// a NUL and to size-1 bytes. qemu-img's listings (info, snapshot -l) show
// a 64 KiB name so (iotest 261), not whole.
func listedString(s string, size int) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	if len(s) > size-1 {
		s = s[:size-1]
	}
	return s
}

// lockForSnapshot quiesces the image (no I/O in flight, img.mu held) and
// returns the current table and its size in bytes; callers unquiesce. On
// error nothing stays locked. Snapshot operations always read the table
// from disk, so they never act on a stale copy.
func (img *Image) lockForSnapshot() ([]snapshot, int64, error) {
	if img.readOnly {
		return nil, 0, errReadOnly
	}
	img.quiesce()
	snaps, size, err := img.readSnapshots()
	if err != nil {
		img.unquiesce()
		return nil, 0, err
	}
	return snaps, size, nil
}

// findSnapshot returns the index of the snapshot whose ID is nameOrID, or
// failing that the first whose name is, or -1. IDs are tried first, as
// QEMU's find_snapshot_by_id_or_name does, so a snapshot named "2" cannot
// shadow the one with ID 2.
func findSnapshot(snaps []snapshot, nameOrID string) int {
	for i, sn := range snaps {
		if sn.id == nameOrID {
			return i
		}
	}
	for i, sn := range snaps {
		if sn.name == nameOrID {
			return i
		}
	}
	return -1
}

// createSnapshot records the current disk state under name, as qemu-img
// snapshot -c does (no VM clock, icount 0).
func (img *Image) createSnapshot(name string) error {
	return img.saveSnapshot(snapshot{name: name, icount: 0}, nil)
}

// checkNewSnapshot validates a new snapshot's name against the table: a
// name must be non-empty and fit the entry's 16-bit name length, and the
// table must have room (maxSnapshots, QEMU's QCOW_MAX_SNAPSHOTS).
func checkNewSnapshot(snaps []snapshot, name string) error {
	if name == "" || len(name) > 65535 {
		return errors.New("invalid snapshot name")
	}
	// Like QEMU, names need not be unique (IDs are); name lookups find
	// the first.
	if len(snaps) >= maxSnapshots {
		return errors.New("too many snapshots")
	}
	return nil
}

// addSnapshot takes a snapshot of the active tree (its whole L1 table,
// the VM state area beyond the disk included) and appends it to the table
// snaps with the name, VM clock, VM state size and icount of meta. Called
// quiesced. The new ID is one above the largest numeric ID in the table,
// as QEMU's find_new_snapshot_id picks it; the date is the host's clock
// now, and disk_size the current virtual size.
func (img *Image) addSnapshot(snaps []snapshot, oldSize int64, meta snapshot) error {
	maxID := 0
	for _, sn := range snaps {
		if n, err := strconv.Atoi(sn.id); err == nil && n > maxID {
			maxID = n
		}
	}
	// The snapshot's L1 table is allocated and written first, as QEMU's
	// qcow2_snapshot_create does; when a refcount would overflow below,
	// it stays allocated and unused (a leak, as qemu-img leaves it:
	// iotest 112). It is written again once the copied flags are gone.
	cs := img.clusterSize
	l1Bytes := int64(len(img.l1)) * 8
	var l1Off int64
	writeL1Copy := func() error {
		raw := make([]byte, l1Bytes)
		for i, v := range img.l1 {
			binary.BigEndian.PutUint64(raw[i*8:], v)
		}
		if err := img.writeMeta(raw, l1Off); err != nil {
			return fmt.Errorf("writing snapshot L1 table: %w", err)
		}
		return nil
	}
	if l1Bytes > 0 {
		var err error
		if l1Off, err = img.allocClusters((l1Bytes + cs - 1) / cs); err != nil {
			return err
		}
		if err := writeL1Copy(); err != nil {
			return err
		}
	}
	// Crash order (QEMU's rule: a copied flag may be missing, never
	// wrong): the active tree loses its copied flags on disk first (L2
	// tables, then the L1 table), then every cluster of it gains a
	// reference (refcount blocks, made durable), and only then do the
	// snapshot's L1 table and table entry name it. A crash leaves at worst
	// missing flags (an extra copy-on-write) and leaked references.
	if err := img.clearCopied(img.l1); err != nil {
		return err
	}
	if err := img.writeActiveL1(); err != nil {
		return err
	}
	if err := img.barrier(); err != nil {
		return err
	}
	if err := img.updateTree(img.l1, 1, false); err != nil {
		// The refcounts were restored; give the flags back.
		if ferr := img.updateTree(img.l1, 0, true); ferr != nil {
			return fmt.Errorf("%w (restoring copied flags: %v)", err, ferr)
		}
		if ferr := img.writeActiveL1(); ferr != nil {
			return fmt.Errorf("%w (restoring copied flags: %v)", err, ferr)
		}
		if errors.Is(err, errRefcountOverflow) {
			// qemu-img reports the overflow as the errno it gets.
			return fmt.Errorf("-22 (Invalid argument)")
		}
		return err
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	if l1Bytes > 0 {
		if err := writeL1Copy(); err != nil {
			return err
		}
	}
	now := time.Now()
	snaps = append(snaps, snapshot{
		l1Off: uint64(l1Off), l1Size: uint32(len(img.l1)),
		id: strconv.Itoa(maxID + 1), name: meta.name,
		dateSec: uint32(now.Unix()), dateNsec: uint32(now.Nanosecond()),
		vmClock: meta.vmClock, vmState: meta.vmState,
		diskSize: img.hdr.size, icount: meta.icount,
	})
	return img.writeSnapshots(snaps, oldSize)
}

// snapshotL1 finds a snapshot by name or ID and loads its L1 table, after
// checking its placement (validateSnapshotL1). The index is returned even
// when loading fails, for messages.
func (img *Image) snapshotL1(snaps []snapshot, nameOrID string) (int, []uint64, error) {
	i := findSnapshot(snaps, nameOrID)
	if i < 0 {
		return -1, nil, fmt.Errorf("snapshot %q not found", nameOrID)
	}
	if err := img.validateSnapshotL1(snaps[i]); err != nil {
		return i, nil, err
	}
	l1, err := img.loadL1(int64(snaps[i].l1Off), snaps[i].l1Size)
	return i, l1, err
}

// applySnapshot makes a snapshot's tree the active tree, as QEMU's
// qcow2_snapshot_goto: the whole snapshot L1 table is taken, so the VM
// state area beyond the disk comes along and reads back through the
// active tree (qemu-io read -b, iotest 029); the active L1 keeps its size
// when it is the longer one, its entries beyond the snapshot's zeroed.
// The next save with VM state, or a resize, drops that area again
// (dropActiveTail) before using it.
func (img *Image) applySnapshot(nameOrID string) error {
	snaps, _, err := img.lockForSnapshot()
	if err != nil {
		return err
	}
	defer img.unquiesce()
	i, snL1, err := img.snapshotL1(snaps, nameOrID)
	if err != nil {
		return err
	}
	sn := snaps[i]
	if sn.diskSize == 0 {
		sn.diskSize = img.hdr.size
	}
	need := max(img.vmStateL1Index(sn.diskSize), int64(len(snL1)))
	if need > int64(len(img.l1)) {
		if err := img.growL1(need); err != nil {
			return err
		}
	}
	// Order: the snapshot's clusters gain a reference, the active L1 is
	// overwritten, then the old active tree loses its references; a crash
	// in between leaks clusters but never corrupts.
	if err := img.updateTree(snL1, 1, false); err != nil {
		return err
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	oldL1 := append([]uint64(nil), img.l1...)
	clear(img.l1)
	copy(img.l1, snL1)
	// Flags in an inactive L1 table mean nothing; until the pass below sets
	// them from the refcounts, none may be written as active.
	for i := range img.l1 {
		img.l1[i] &^= oflagCopied
	}
	if err := img.writeActiveL1(); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	if err := img.updateTree(oldL1, -1, false); err != nil {
		return err
	}
	if err := img.updateTree(img.l1, 0, true); err != nil {
		return err
	}
	if err := img.writeActiveL1(); err != nil {
		return err
	}
	if sn.diskSize != img.hdr.size {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], sn.diskSize)
		if err := img.writeMeta(b[:], 24); err != nil {
			return err
		}
		img.hdr.size = sn.diskSize
		img.size.Store(int64(sn.diskSize))
	}
	img.freeByte = 0
	return img.flushLocked()
}

// deleteSnapshot removes a snapshot and releases what only it referenced:
// the table entry goes first (durably, writeSnapshots), then the tree's
// references and the snapshot's L1 table; clusters reaching refcount 0
// become free, and the active tree's copied flags are recomputed, since
// clusters it shared with the snapshot may now be its alone.
func (img *Image) deleteSnapshot(nameOrID string) error {
	snaps, oldSize, err := img.lockForSnapshot()
	if err != nil {
		return err
	}
	defer img.unquiesce()
	i, snL1, err := img.snapshotL1(snaps, nameOrID)
	if err != nil {
		return err
	}
	sn := snaps[i]
	// The table no longer names the snapshot before its references go.
	if err := img.writeSnapshots(append(snaps[:i:i], snaps[i+1:]...), oldSize); err != nil {
		return err
	}
	// From here on a failure leaks clusters at worst; the messages are
	// qcow2_snapshot_delete's.
	if err := img.updateTree(snL1, -1, false); err != nil {
		return errnoError("Failed to free the cluster and L1 table", err)
	}
	if sn.l1Size > 0 {
		img.freeClustersOrLeak(int64(sn.l1Off), (int64(sn.l1Size)*8+img.clusterSize-1)/img.clusterSize)
	}
	if err := img.updateTree(img.l1, 0, true); err != nil {
		return errnoError("Failed to update snapshot status in disk", err)
	}
	if err := img.writeActiveL1(); err != nil {
		return err
	}
	return img.flushLocked()
}

// errNoSnapshot is QEMU's wording when LoadSnapshot finds no match.
var errNoSnapshot = errors.New("Can't find snapshot")

// LoadSnapshot makes a read-only image present the snapshot with the given
// ID and name (either may be empty) instead of the active state, as
// qcow2_snapshot_load_tmp: the snapshot's L1 table replaces the active one
// in memory only; the virtual size is unchanged. Nothing else needs to
// change: the image is read-only, and the L2 cache is keyed by host
// offset, so tables cached for the active tree stay correct for any tree
// that shares them.
func (img *Image) LoadSnapshot(id, name string) error {
	if !img.readOnly {
		return errors.New("Device is not readonly")
	}
	if id == "" && name == "" {
		return errors.New("snapshot_id and name are both NULL")
	}
	img.quiesce()
	defer img.unquiesce()
	snaps, _, err := img.readSnapshots()
	if err != nil {
		return err
	}
	for _, sn := range snaps {
		if (id == "" || sn.id == id) && (name == "" || sn.name == name) {
			if err := img.validateSnapshotL1(sn); err != nil {
				return err
			}
			l1, err := img.loadL1(int64(sn.l1Off), sn.l1Size)
			if err != nil {
				return err
			}
			img.l1 = l1
			return nil
		}
	}
	return errNoSnapshot
}
