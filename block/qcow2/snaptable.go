package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// The snapshot table (spec "Snapshots"): parsing, encoding, and the
// per-entry problems check reports and repairs as qemu-img check does.

// snapshot is one entry of the snapshot table (spec "Snapshots", "Snapshot
// table entry"). l1Off and l1Size locate the snapshot's own L1 table (bytes
// into the file, entries); id is the unique ID string and name the tag
// ("name" in the spec); dateSec and dateNsec the wall-clock time it was
// taken (seconds since the Epoch, and nanoseconds); vmClock the guest's run
// time then, in nanoseconds; vmState the saved machine state's size in
// bytes, 0 for a disk-only snapshot (the 64-bit extra field when present,
// else the 32-bit one). The state is stored like guest data, at guest
// offsets from the first L1 entry past the virtual disk (vmstate.go).
type snapshot struct {
	l1Off    uint64
	l1Size   uint32
	id, name string
	dateSec  uint32
	dateNsec uint32
	vmClock  uint64
	vmState  uint64
	diskSize uint64 // an entry without the field has the current disk size
	icount   uint64 // ^0: unknown
	extra    []byte // extra data beyond the fields we know, preserved

	// incomplete: a version 3 entry with less than the 16 bytes of extra
	// data the spec requires (QEMU: "snapshot table entry N is incomplete").
	incomplete bool
	// droppedExtra is the original extra data size when it exceeded
	// maxSnapshotExtra and the excess was dropped (repair only).
	droppedExtra uint32
}

// snapshotExtraLen is the extra data QEMU writes: vm_state_size_large,
// disk_size, icount.
const snapshotExtraLen = 24

// snapshotExtraRequired is what version 3 entries must carry (up to and
// including disk_size).
const snapshotExtraRequired = 16

// tableParse says how to read a snapshot table. v3 is the image's version
// being 3, which makes entries without disk_size incomplete.
type tableParse struct {
	v3 bool
	// diskSize is the size assumed for entries without the disk size field
	// (QEMU: the current virtual size).
	diskSize uint64
	// repair tolerates entries with too much extra data, dropping the
	// excess (qemu-img check -r all); otherwise they are an error.
	repair bool
}

// errTooMuchExtra is QEMU's wording for an entry with oversized extra data.
func errTooMuchExtra(i uint32) error {
	return corruptf("Too much extra metadata in snapshot table entry %d\nYou can force-remove this extra metadata with qemu-img check -r all", i)
}

// parseSnapshots reads n snapshot table entries at off from r, bounding
// every length before trusting it. Each entry is the 40-byte fixed part,
// the extra data, the ID and the name, padded to a multiple of 8 bytes
// (QEMU aligns entries so); the whole table may not exceed
// maxSnapshotTable. Extra data beyond maxSnapshotExtra is an error, or
// with repair is cut (droppedExtra records it). It returns the entries and the table
// size in bytes. The entries' L1 tables are not validated here (QEMU does
// that when a snapshot is used or checked, see validateSnapshotL1).
func parseSnapshots(r io.ReaderAt, off int64, n uint32, fileSize int64, p tableParse) ([]snapshot, int64, error) {
	if n > maxSnapshots {
		return nil, 0, corruptf("too many snapshots (%d)", n)
	}
	var snaps []snapshot
	pos := off
	var hdr [40]byte
	read := func(b []byte, at int64) error {
		if at < 0 || at+int64(len(b)) > fileSize {
			return corruptf("snapshot table entry at %#x runs beyond the end of the file", at)
		}
		if len(b) == 0 {
			return nil // ReadAt may say EOF for nothing at the end
		}
		if _, err := r.ReadAt(b, at); err != nil {
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
			diskSize: p.diskSize,
			icount:   ^uint64(0),
		}
		idLen, nameLen := int64(be.Uint16(hdr[12:])), int64(be.Uint16(hdr[14:]))
		extraLen := int64(be.Uint32(hdr[36:]))
		kept := extraLen
		if extraLen > maxSnapshotExtra {
			if !p.repair {
				return nil, 0, errTooMuchExtra(i)
			}
			sn.droppedExtra = uint32(extraLen)
			kept = maxSnapshotExtra
		}
		sn.incomplete = p.v3 && extraLen < snapshotExtraRequired
		extra := make([]byte, kept)
		if err := read(extra, pos+40); err != nil {
			return nil, 0, err
		}
		names := make([]byte, idLen+nameLen)
		if err := read(names, pos+40+extraLen); err != nil {
			return nil, 0, err
		}
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
			sn.extra = extra[snapshotExtraLen:]
		}
		sn.id = string(names[:idLen])
		sn.name = string(names[idLen:])
		pos += (40 + extraLen + idLen + nameLen + 7) &^ 7
		snaps = append(snaps, sn)
	}
	return snaps, pos - off, nil
}

// encodeSnapshots serializes the snapshot table; every entry gets the full
// extra data QEMU writes (which completes incomplete entries): the 64-bit
// VM state size, disk_size, and icount (bytes 56-63, QEMU's current
// docs/interop/qcow2.txt; -1 when not recorded), then any unknown extra
// bytes read from the image, preserved. Each entry is padded to a multiple
// of 8 bytes, as QEMU aligns them. The 32-bit VM state size saturates; the
// 64-bit field is the one readers use.
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

// readSnapshots reads the image's snapshot table from disk (entries and the
// table's size in bytes), refusing entries with oversized extra data.
func (img *Image) readSnapshots() ([]snapshot, int64, error) {
	return img.readSnapshotTable(false)
}

// readSnapshotTable reads the table, with repair dropping oversized extra
// data instead of failing.
func (img *Image) readSnapshotTable(repair bool) ([]snapshot, int64, error) {
	if img.hdr.nbSnapshots == 0 {
		return nil, 0, nil
	}
	st, err := img.f.Stat()
	if err != nil {
		return nil, 0, err
	}
	return parseSnapshots(img.f, int64(img.hdr.snapOff), img.hdr.nbSnapshots, st.Size(),
		tableParse{v3: img.hdr.version >= 3, diskSize: img.hdr.size, repair: repair})
}

// validateSnapshotL1 checks a snapshot's L1 table placement as QEMU's
// qcow2_validate_table("Snapshot L1 table") before it is loaded: at most
// maxL1Bytes, cluster aligned, no offset overflow. Whether it lies inside
// the file is left to the read, which reports corruption.
func (img *Image) validateSnapshotL1(sn snapshot) error {
	if uint64(sn.l1Size)*8 > maxL1Bytes {
		return errors.New("Snapshot L1 table too large")
	}
	if sn.l1Off&uint64(img.clusterSize-1) != 0 || sn.l1Off > math.MaxInt64-uint64(sn.l1Size)*8 {
		return errors.New("Snapshot L1 table offset invalid")
	}
	return nil
}

// writeSnapshots writes a new snapshot table, points the header at it, and
// frees the old one: the table is never updated in place, so a crash leaves
// the old table or the new one (and at worst leaked clusters). nb_snapshots
// and snapshots_offset are adjacent header fields (bytes 60-71) and are
// written together in one 12-byte write. oldSize is the old table's size
// in bytes, to free its clusters.
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
	// The new table and its refcounts are durable before the header names it.
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
		img.freeClustersOrLeak(oldOff, (oldSize+cs-1)/cs)
	}
	return nil
}
