package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/petrel-vmm/petrel/block"
)

// snapshot is one entry of the snapshot table (spec "Snapshots").
type snapshot struct {
	l1Off    uint64
	l1Size   uint32
	id, name string
	dateSec  uint32
	dateNsec uint32
	vmClock  uint64
	vmState  uint64
	diskSize uint64
	icount   uint64 // ^0: unknown
	extra    []byte // extra data beyond the fields we know, preserved
}

// snapshotExtraLen is the extra data QEMU writes: vm_state_size_large,
// disk_size, icount.
const snapshotExtraLen = 24

// parseSnapshots reads n snapshot table entries at off from r, bounding
// every length before trusting it. It returns the entries and the table
// size in bytes.
func parseSnapshots(r io.ReaderAt, off int64, n uint32, fileSize int64, clusterSize int64, v3 bool) ([]snapshot, int64, error) {
	if n > maxSnapshots {
		return nil, 0, corruptf("too many snapshots (%d)", n)
	}
	var snaps []snapshot
	pos := off
	var hdr [40]byte
	read := func(p []byte, at int64) error {
		if at < 0 || at+int64(len(p)) > fileSize {
			return corruptf("snapshot table entry at %#x runs beyond the end of the file", at)
		}
		if _, err := r.ReadAt(p, at); err != nil {
			return fmt.Errorf("reading snapshot table at %#x: %w", at, err)
		}
		return nil
	}
	be := binary.BigEndian
	for i := uint32(0); i < n; i++ {
		if pos-off > maxSnapshotTable {
			return nil, 0, corruptf("snapshot table is larger than %d bytes", maxSnapshotTable)
		}
		if err := read(hdr[:], pos); err != nil {
			return nil, 0, err
		}
		sn := snapshot{
			l1Off:    be.Uint64(hdr[0:]),
			l1Size:   be.Uint32(hdr[8:]),
			dateSec:  be.Uint32(hdr[16:]),
			dateNsec: be.Uint32(hdr[20:]),
			vmClock:  be.Uint64(hdr[24:]),
			vmState:  uint64(be.Uint32(hdr[32:])),
			icount:   ^uint64(0),
		}
		idLen, nameLen := int64(be.Uint16(hdr[12:])), int64(be.Uint16(hdr[14:]))
		extraLen := int64(be.Uint32(hdr[36:]))
		if extraLen > maxSnapshotExtra {
			return nil, 0, corruptf("snapshot %d extra data too large (%d bytes)", i, extraLen)
		}
		if v3 && extraLen < 16 {
			return nil, 0, corruptf("snapshot %d: version 3 snapshot entries need 16 bytes of extra data, have %d", i, extraLen)
		}
		if uint64(sn.l1Size)*8 > maxL1Bytes {
			return nil, 0, corruptf("snapshot %d L1 table too large (%d entries)", i, sn.l1Size)
		}
		if sn.l1Off%uint64(clusterSize) != 0 || sn.l1Off+uint64(sn.l1Size)*8 > uint64(fileSize) {
			return nil, 0, corruptf("snapshot %d L1 table at %#x+%d entries is invalid", i, sn.l1Off, sn.l1Size)
		}
		rest := make([]byte, extraLen+idLen+nameLen)
		if err := read(rest, pos+40); err != nil {
			return nil, 0, err
		}
		extra := rest[:extraLen]
		if len(extra) >= 8 {
			sn.vmState = be.Uint64(extra[0:])
		}
		if len(extra) >= 16 {
			sn.diskSize = be.Uint64(extra[8:])
		}
		if len(extra) >= 24 {
			sn.icount = be.Uint64(extra[16:])
		}
		if len(extra) > snapshotExtraLen {
			sn.extra = append([]byte(nil), extra[snapshotExtraLen:]...)
		}
		sn.id = string(rest[extraLen : extraLen+idLen])
		sn.name = string(rest[extraLen+idLen:])
		pos += (40 + extraLen + idLen + nameLen + 7) &^ 7
		snaps = append(snaps, sn)
	}
	return snaps, pos - off, nil
}

// encodeSnapshots serializes the snapshot table.
func encodeSnapshots(snaps []snapshot) []byte {
	var out []byte
	be := binary.BigEndian
	for _, sn := range snaps {
		extraLen := snapshotExtraLen + len(sn.extra)
		n := (40 + extraLen + len(sn.id) + len(sn.name) + 7) &^ 7
		e := make([]byte, n)
		be.PutUint64(e[0:], sn.l1Off)
		be.PutUint32(e[8:], sn.l1Size)
		be.PutUint16(e[12:], uint16(len(sn.id)))
		be.PutUint16(e[14:], uint16(len(sn.name)))
		be.PutUint32(e[16:], sn.dateSec)
		be.PutUint32(e[20:], sn.dateNsec)
		be.PutUint64(e[24:], sn.vmClock)
		be.PutUint32(e[32:], uint32(min(sn.vmState, 1<<32-1)))
		be.PutUint32(e[36:], uint32(extraLen))
		be.PutUint64(e[40:], sn.vmState)
		be.PutUint64(e[48:], sn.diskSize)
		be.PutUint64(e[56:], sn.icount)
		copy(e[64:], sn.extra)
		copy(e[40+extraLen:], sn.id)
		copy(e[40+extraLen+len(sn.id):], sn.name)
		out = append(out, e...)
	}
	return out
}

// readSnapshots reads the image's snapshot table.
func (img *Image) readSnapshots() ([]snapshot, int64, error) {
	if img.hdr.nbSnapshots == 0 {
		return nil, 0, nil
	}
	st, err := img.f.Stat()
	if err != nil {
		return nil, 0, err
	}
	return parseSnapshots(img.f, int64(img.hdr.snapOff), img.hdr.nbSnapshots, st.Size(), img.clusterSize, img.hdr.version >= 3)
}

// writeSnapshots writes a new snapshot table, points the header at it, and
// frees the old one.
func (img *Image) writeSnapshots(snaps []snapshot, oldSize int64) error {
	cs := img.clusterSize
	raw := encodeSnapshots(snaps)
	var newOff int64
	if len(raw) > 0 {
		if int64(len(raw)) > maxSnapshotTable {
			return fmt.Errorf("snapshot table would exceed %d bytes", maxSnapshotTable)
		}
		var err error
		if newOff, err = img.allocClusters((int64(len(raw)) + cs - 1) / cs); err != nil {
			return err
		}
		if err := img.writeMeta(raw, newOff); err != nil {
			return fmt.Errorf("writing snapshot table: %w", err)
		}
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	var hb [12]byte
	binary.BigEndian.PutUint32(hb[0:], uint32(len(snaps)))
	binary.BigEndian.PutUint64(hb[4:], uint64(newOff))
	if err := img.writeMeta(hb[:], 60); err != nil {
		return fmt.Errorf("updating snapshot table location: %w", err)
	}
	if err := img.sync(); err != nil {
		return err
	}
	oldOff := int64(img.hdr.snapOff)
	img.hdr.nbSnapshots, img.hdr.snapOff = uint32(len(snaps)), uint64(newOff)
	if oldOff != 0 && oldSize > 0 {
		return img.freeClusters(oldOff, (oldSize+cs-1)/cs)
	}
	return nil
}

// updateTree adds addend to the refcount of every L2 table and data
// cluster reachable from l1 (QEMU's qcow2_update_snapshot_refcount); with
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
// changed is appended to done.
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

func withCopied(ent uint64, copied bool) uint64 {
	if copied {
		return ent | oflagCopied
	}
	return ent &^ oflagCopied
}

// writeActiveL1 writes the whole active L1 table. Its copied flags must
// agree with the refcounts on disk, so the caches (refcount blocks, then
// L2 tables) are flushed first.
func (img *Image) writeActiveL1() error {
	if err := img.flushLocked(); err != nil {
		return err
	}
	raw := make([]byte, len(img.l1)*8)
	for i, v := range img.l1 {
		binary.BigEndian.PutUint64(raw[i*8:], v)
	}
	if err := img.writeMeta(raw, int64(img.hdr.l1Off)); err != nil {
		return fmt.Errorf("writing L1 table: %w", err)
	}
	return nil
}

// Snapshots lists the internal snapshots.
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
			ID: sn.id, Name: sn.name, VMStateSize: int64(sn.vmState),
			Date:    time.Unix(int64(sn.dateSec), int64(sn.dateNsec)),
			VMClock: time.Duration(sn.vmClock), DiskSize: int64(sn.diskSize),
		}
		if sn.icount != ^uint64(0) {
			out[i].ICount = int64(sn.icount)
		}
	}
	return out, nil
}

// lockForSnapshot quiesces the image (no I/O in flight, img.mu held) and
// returns the current table; callers unquiesce.
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

// createSnapshot records the current disk state under name.
func (img *Image) createSnapshot(name string) error {
	snaps, oldSize, err := img.lockForSnapshot()
	if err != nil {
		return err
	}
	defer img.unquiesce()
	if name == "" || len(name) > 65535 {
		return errors.New("invalid snapshot name")
	}
	// Like QEMU, names need not be unique (IDs are); name lookups find
	// the first.
	if len(snaps) >= maxSnapshots {
		return errors.New("too many snapshots")
	}
	maxID := 0
	for _, sn := range snaps {
		if n, err := strconv.Atoi(sn.id); err == nil && n > maxID {
			maxID = n
		}
	}
	// References first: every cluster of the active tree gains one.
	if err := img.updateTree(img.l1, 1, true); err != nil {
		return err
	}
	if err := img.writeActiveL1(); err != nil {
		return err
	}
	cs := img.clusterSize
	l1Bytes := int64(len(img.l1)) * 8
	var l1Off int64
	if l1Bytes > 0 {
		if l1Off, err = img.allocClusters((l1Bytes + cs - 1) / cs); err != nil {
			return err
		}
		raw := make([]byte, l1Bytes)
		for i, v := range img.l1 {
			binary.BigEndian.PutUint64(raw[i*8:], v)
		}
		if err := img.writeMeta(raw, l1Off); err != nil {
			return fmt.Errorf("writing snapshot L1 table: %w", err)
		}
	}
	now := time.Now()
	snaps = append(snaps, snapshot{
		l1Off: uint64(l1Off), l1Size: uint32(len(img.l1)),
		id: strconv.Itoa(maxID + 1), name: name,
		dateSec: uint32(now.Unix()), dateNsec: uint32(now.Nanosecond()),
		diskSize: img.hdr.size, icount: 0, // qemu-img writes 0
	})
	return img.writeSnapshots(snaps, oldSize)
}

// snapshotL1 finds a snapshot by name or ID and loads its L1 table.
func (img *Image) snapshotL1(snaps []snapshot, nameOrID string) (int, []uint64, error) {
	i := findSnapshot(snaps, nameOrID)
	if i < 0 {
		return -1, nil, fmt.Errorf("snapshot %q not found", nameOrID)
	}
	l1, err := img.loadL1(int64(snaps[i].l1Off), snaps[i].l1Size)
	return i, l1, err
}

// applySnapshot makes a snapshot's state the active disk state.
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
	if int64(len(snL1)) > int64(len(img.l1)) {
		if err := img.growL1(int64(len(snL1))); err != nil {
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
	if sn.diskSize != 0 && sn.diskSize != img.hdr.size {
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

// deleteSnapshot removes a snapshot and releases what only it referenced.
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
	if err := img.updateTree(snL1, -1, false); err != nil {
		return err
	}
	if sn.l1Size > 0 {
		if err := img.freeClusters(int64(sn.l1Off), (int64(sn.l1Size)*8+img.clusterSize-1)/img.clusterSize); err != nil {
			return err
		}
	}
	if err := img.updateTree(img.l1, 0, true); err != nil {
		return err
	}
	if err := img.writeActiveL1(); err != nil {
		return err
	}
	return img.flushLocked()
}
