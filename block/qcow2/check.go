package qcow2

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// Check compares every refcount with the references the metadata makes, as
// qemu-img check: refcount > references is a leak, refcount < references
// (or a misplaced or misaligned entry, or a wrong copied flag) is a
// corruption. RepairLeaks lowers leaked refcounts; RepairAll rebuilds the
// refcount structures from the references and fixes the copied flags. A
// repair (of either kind) that leaves no corruption and no check error
// clears the image's corrupt mark. The whole check runs quiesced: guest
// I/O waits until it is done.
func (img *Image) Check(mode block.RepairMode) (block.CheckResult, error) {
	if mode != block.RepairNone && img.readOnly {
		return block.CheckResult{}, errReadOnly
	}
	img.quiesce()
	defer img.unquiesce()
	res, err := img.check(mode)
	if err != nil || mode == block.RepairNone || res.Corruptions > 0 || res.CheckErrors > 0 {
		return res, err
	}
	// A repair left the image consistent: it is no longer corrupt, nor
	// dirty (lazy refcounts), as qcow2_co_check_locked's
	// qcow2_mark_clean and qcow2_mark_consistent.
	if img.hdr.incompat&incompatDirty != 0 {
		img.dirtyMarked = true
		if err := img.clearDirty(); err != nil {
			return res, err
		}
	}
	if err := img.markConsistent(); err != nil {
		return res, err
	}
	return res, nil
}

// maxCheckClusters bounds the reference counter array: 2^28 clusters of 4
// bytes each, 1 GiB of memory; a larger image file is refused rather than
// risking the VMM's or qemu-img's memory.
const maxCheckClusters = 1 << 28

// refScan is the state of one walk over the metadata. img is the image
// being checked; res receives the counts and messages; fileEnd is the
// file's size at the start of the scan, in bytes (refs has one counter
// per cluster up to it, and a reference beyond it is an error).
type refScan struct {
	img       *Image
	refs      []uint32 // references per host cluster index
	res       *block.CheckResult
	fileEnd   int64
	copiedBad int // active entries whose copied flag disagrees
	// tableFixes counts snapshot table entries a repair rewrites
	// (incomplete entries, oversized extra data).
	tableFixes int
	// overflows counts references past the refcount width's maximum:
	// corruptions no repair here can fix (qemu-img check -r all neither
	// rebuilds for them nor fixes them).
	overflows int
	dropped   []int // indices of snapshot table entries a repair deletes
	// repair (check -r all): misaligned active L2 entries that hold no
	// data are fixed as they are found.
	repair bool
}

// errorf records a finding with qemu-img check's "ERROR " prefix: with
// corrupt a corruption (metadata is wrong), otherwise a check error (the
// check could not read something), which qemu-img counts apart.
func (s *refScan) errorf(corrupt bool, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if corrupt {
		s.res.Corruptions++
		s.res.Messages = append(s.res.Messages, "ERROR "+msg)
	} else {
		s.res.CheckErrors++
		s.res.Messages = append(s.res.Messages, "ERROR "+msg)
	}
}

// ref counts one reference to every cluster of the host range [off, off+n).
// Counters saturate at 2^32-1 rather than wrap, so an absurd number of
// references still compares as more than any refcount width allows.
func (s *refScan) ref(off, n int64, what string) {
	if n <= 0 {
		return
	}
	cb := s.img.clusterBits
	if off < 0 || off+n < off {
		s.errorf(true, "%s offset %#x is out of range", what, uint64(off))
		return
	}
	// As qcow2_inc_refcounts_imrt: a range ending less than a cluster
	// past the end of the file is counted (the last cluster need not be
	// written whole, a compressed cluster's sector count rounds up); one
	// reaching a cluster or more beyond it is an error, in QEMU's words
	// (iotest 138).
	if off+n-s.fileEnd >= s.img.clusterSize {
		s.res.Corruptions++
		s.res.Messages = append(s.res.Messages, fmt.Sprintf("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", off, n))
		return
	}
	if last := (off + n - 1) >> cb; last >= int64(len(s.refs)) {
		s.refs = append(s.refs, make([]uint32, last+1-int64(len(s.refs)))...)
	}
	// A count at the image's refcount maximum takes no more: QEMU counts
	// references in entries of the image's own width, and reports the
	// overflow, in its words, rather than a refcount to repair (no width
	// could store it; iotest 112).
	refMax := uint64(^uint32(0))
	if s.img.rcBits < 32 {
		refMax = 1<<s.img.rcBits - 1
	}
	for c := off >> cb; c <= (off+n-1)>>cb; c++ {
		if uint64(s.refs[c]) >= refMax {
			if refMax < uint64(^uint32(0)) {
				s.res.Corruptions++
				s.overflows++
				s.res.Messages = append(s.res.Messages, fmt.Sprintf("ERROR: overflow cluster offset=%#x", c<<cb),
					"Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
			}
			continue
		}
		s.refs[c]++
	}
}

// walkL1 counts the references of one L1 tree; active trees also have
// their copied flags compared with refcounts afterwards. Only the active
// tree adds to the allocation and fragmentation counts, as qemu-img's
// figures describe the active disk. An L2 table beyond the file is
// reported and not read.
func (s *refScan) walkL1(l1 []uint64, active bool) {
	img := s.img
	cs := img.clusterSize
	for i, ent := range l1 {
		nextContiguous := int64(0) // fragmentation as QEMU counts it, per L2 table
		l2off := int64(ent & l1OffsetMask)
		if l2off == 0 {
			continue
		}
		if l2off&(cs-1) != 0 {
			s.errorf(true, "L2 table offset %#x in L1 entry %d is not cluster aligned", l2off, i)
			continue
		}
		s.ref(l2off, cs, "L2 table")
		if l2off>>img.clusterBits >= int64(len(s.refs)) {
			continue
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			s.errorf(false, "reading L2 table at %#x: %v", l2off, err)
			continue
		}
		for j := int64(0); j < img.l2Entries; j++ {
			l2e, bm := img.l2Entry(e.data, j)
			if l2e&oflagCompressed != 0 && img.external {
				s.errorf(true, "compressed cluster %d with data file, entry=%#x", j, l2e)
				continue
			}
			if l2e&oflagCompressed != 0 {
				off, size := img.compressedRange(l2e)
				if active && l2e&oflagCopied != 0 {
					s.errorf(true, "compressed cluster entry %#x has the copied flag", l2e)
				}
				s.ref(off, size, "compressed cluster")
				if active {
					// Compressed clusters count as fragmented by nature.
					s.res.CompressedClusters++
					s.res.AllocatedClusters++
					s.res.FragmentedClusters++
				}
				continue
			}
			if l2e&img.l2ReservedMask() != 0 {
				s.errorf(true, "found l2 entry with reserved bits set: %x", l2e)
				continue
			}
			host, allocated := img.hostCluster(l2e)
			if !allocated {
				continue
			}
			// Allocation figures count misaligned entries too, as
			// QEMU's.
			if active {
				s.res.AllocatedClusters++
				if nextContiguous != 0 && host != nextContiguous {
					s.res.FragmentedClusters++
				}
				nextContiguous = host + cs
			}
			if host&(cs-1) != 0 {
				// check_refcounts_l2's words (iotest 271). An entry
				// that holds no data (zero flag, or no allocated
				// subcluster) loses its host offset in a repair, as
				// it is found: it becomes a zero cluster, or with
				// extended L2 entries keeps its bitmap (which says
				// what reads zeroes and what the backing file), and
				// its cluster is left to the leak repair. Otherwise
				// the cluster-sized range at the misaligned offset
				// counts as referenced, as in QEMU, which protects
				// both clusters it touches.
				holdsData := img.misalignedHoldsData(l2e, bm)
				if !holdsData && active && s.repair {
					s.res.Messages = append(s.res.Messages, fmt.Sprintf("Repairing offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", host))
					s.res.CorruptionsFixed++
					img.dropHostOffset(e, j)
					continue
				}
				if holdsData {
					s.errorf(true, "offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", host)
				} else {
					s.errorf(true, "offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", host)
				}
				if !img.external {
					s.ref(host, cs, "data cluster")
				}
				continue
			}
			if !img.external { // external data clusters are not refcounted
				s.ref(host, cs, "data cluster")
			}
		}
	}
}

// scan walks all metadata of the image into s.refs: header, active L1 and
// its tree, the snapshot table and every snapshot's tree, the bitmaps.
// withRefcountMeta adds the refcount table and blocks themselves (left out
// when rebuilding them, since the old ones are to be freed).
// With repair, snapshot table entries with oversized extra data are read
// (the excess dropped) instead of failing the scan.
func (img *Image) scan(res *block.CheckResult, withRefcountMeta, repair bool) (*refScan, []snapshot, int64, error) {
	st, err := img.f.Stat()
	if err != nil {
		return nil, nil, 0, err
	}
	cs := img.clusterSize
	s := &refScan{img: img, res: res, fileEnd: st.Size(), repair: repair}
	if n := (st.Size() + cs - 1) / cs; n > maxCheckClusters {
		return nil, nil, 0, fmt.Errorf("image file has %d clusters, more than check handles (%d)", n, maxCheckClusters)
	}
	s.refs = make([]uint32, (st.Size()+cs-1)/cs)
	s.ref(0, cs, "header")
	s.ref(int64(img.hdr.l1Off), int64(img.hdr.l1Size)*8, "L1 table")
	if img.hdr.cryptMethod == cryptLUKS {
		s.ref(int64(img.hdr.cryptoOff), int64(img.hdr.cryptoLen), "LUKS header area")
	}
	s.walkL1(img.l1, true)
	snaps, tableSize, err := img.readSnapshotTable(repair)
	if err != nil {
		// Without the table, snapshot references cannot be counted: a
		// repair would free clusters the snapshots still use, so the
		// check stops here, as qemu-img's does.
		return nil, nil, 0, fmt.Errorf("ERROR failed to read the snapshot table: %w", err)
	}
	s.ref(int64(img.hdr.snapOff), tableSize, "snapshot table")
	for i, sn := range snaps {
		s.snapshotEntry(i, sn, repair)
	}
	s.scanBitmaps()
	if withRefcountMeta {
		s.ref(int64(img.hdr.rtOff), int64(img.hdr.rtClusters)*cs, "refcount table")
		for i, ent := range img.rt {
			off := int64(ent & reftOffsetMask)
			if off == 0 {
				continue
			}
			if off&(cs-1) != 0 {
				s.errorf(true, "refcount block %d offset %#x is not cluster aligned", i, off)
				continue
			}
			s.ref(off, cs, "refcount block")
		}
	}
	return s, snaps, tableSize, nil
}

// snapshotEntry counts the references of snapshot table entry i, as
// qemu-img check: an entry whose L1 table cannot be valid is reported and
// its references are not counted (the snapshot cannot be loaded, so what
// only it held leaks); incomplete entries and dropped extra data are
// corruptions that a repair fixes by rewriting the table.
func (s *refScan) snapshotEntry(i int, sn snapshot, repair bool) {
	img, cs := s.img, s.img.clusterSize
	verb := "ERROR"
	if repair {
		verb = "Repairing"
	}
	if sn.droppedExtra > 0 {
		s.res.Messages = append(s.res.Messages, fmt.Sprintf("Discarding too much extra metadata in snapshot table entry %d (%d > %d)", i, sn.droppedExtra, maxSnapshotExtra))
		s.res.Corruptions++
		s.tableFixes++
	}
	if sn.incomplete {
		s.res.Messages = append(s.res.Messages, fmt.Sprintf("%s snapshot table entry %d is incomplete", verb, i))
		s.res.Corruptions++
		s.tableFixes++
	}
	// An L1 table that cannot be valid makes the snapshot unusable; QEMU
	// keeps such an entry, whose bogus extent then trips its overlap
	// checks on every later metadata write. A repair drops the entry.
	bad := func(msg string) {
		s.res.Corruptions++
		s.res.Messages = append(s.res.Messages, msg)
		if repair {
			s.tableFixes++
			s.dropped = append(s.dropped, i)
			s.res.Messages = append(s.res.Messages, fmt.Sprintf("Repairing snapshot table: deleting snapshot %s (%s), its L1 table is invalid", sn.id, sn.name))
		}
	}
	switch l1Bytes := int64(sn.l1Size) * 8; {
	case sn.l1Off&uint64(cs-1) != 0:
		bad(fmt.Sprintf("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted", sn.id, sn.name, sn.l1Off))
	case l1Bytes > maxL1Bytes:
		bad(fmt.Sprintf("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted", sn.id, sn.name, sn.l1Size))
	case sn.l1Off > uint64(s.fileEnd) || int64(sn.l1Off)+l1Bytes > (s.fileEnd+cs-1)&^(cs-1):
		bad(fmt.Sprintf("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", sn.l1Off, l1Bytes))
	default:
		s.ref(int64(sn.l1Off), l1Bytes, "snapshot L1 table")
		l1, err := img.loadL1(int64(sn.l1Off), sn.l1Size)
		if err != nil {
			s.errorf(false, "snapshot %s: %v", sn.id, err)
			return
		}
		s.walkL1(l1, false)
	}
}

// rebuildRefcounts replaces the refcount table and blocks with new ones
// computed from the references, placed after everything else in the file
// (QEMU's rebuild_refcount_structure). With keepOld the old structures
// keep a reference each in the new counts, as QEMU's rebuild leaves them,
// and a leak repair frees them afterwards (check's "Repairing cluster"
// lines after "Rebuilding refcount structure"); otherwise they become
// free at once.
// The new blocks and table are written and synced before the header
// points at them, and the header is synced before memory switches over,
// so a crash leaves the old structures (still valid to a re-check) or the
// new ones. Like growRefcountTable it sizes the new area by iteration, as
// the blocks must also count themselves and the table.
func (img *Image) rebuildRefcounts(keepOld bool) error {
	var res block.CheckResult
	s, _, _, err := img.scan(&res, keepOld, true)
	if err != nil {
		return err
	}
	refs := s.refs
	for i, r := range refs {
		if uint64(r) > img.maxRefcount() {
			return fmt.Errorf("cluster %d has %d references, more than %d-bit refcounts hold", i, r, img.rcBits)
		}
	}
	cs, E := img.clusterSize, img.rbEntries
	// The new structures go after the end of the file, so that the old
	// ones stay intact until the header points elsewhere.
	end := int64(len(refs))
	a := end
	k, tc := refcountLayout(a, E, cs)
	total := a + k + tc
	counts := make([]uint32, total)
	copy(counts, refs[:end])
	for c := a; c < total; c++ {
		counts[c] = 1
	}
	table := make([]uint64, tc*cs/8)
	blk := make([]byte, cs)
	for j := int64(0); j < k; j++ {
		clear(blk)
		for c := j * E; c < min((j+1)*E, total); c++ {
			img.setRefcountAt(blk, c-j*E, uint64(counts[c]))
		}
		off := (a + j) * cs
		if err := img.writeMeta(blk, off); err != nil {
			return fmt.Errorf("writing refcount block: %w", err)
		}
		table[j] = uint64(off)
	}
	raw := make([]byte, tc*cs)
	for i, v := range table {
		binary.BigEndian.PutUint64(raw[i*8:], v)
	}
	tableOff := (a + k) * cs
	if err := img.writeMeta(raw, tableOff); err != nil {
		return fmt.Errorf("writing refcount table: %w", err)
	}
	if err := img.sync(); err != nil {
		return err
	}
	var hb [12]byte
	binary.BigEndian.PutUint64(hb[0:], uint64(tableOff))
	binary.BigEndian.PutUint32(hb[8:], uint32(tc))
	if err := img.writeMeta(hb[:], 48); err != nil {
		return fmt.Errorf("updating refcount table location: %w", err)
	}
	if err := img.sync(); err != nil {
		return err
	}
	img.rbc.reset()
	img.rt = table
	img.hdr.rtOff, img.hdr.rtClusters = uint64(tableOff), uint32(tc)
	img.freeHint = 0
	img.freeByte = 0
	return nil
}

// dropInvalidEntries clears active L1/L2 entries that cannot be valid
// (misaligned, overlapping the header, beyond the end of the file): L1
// entries become unallocated, L2 entries zero clusters (v3) or unallocated
// (v2), as qemu-img check -r all does for entries it cannot follow. The
// data they pointed to is lost either way; the image becomes consistent.
func (img *Image) dropInvalidEntries(fileEnd int64) error {
	cs := img.clusterSize
	// As qcow2_inc_refcounts_imrt, a range is beyond the file only when it
	// exceeds the end by a cluster or more: the last compressed cluster's
	// sector count is rounded up past the bytes written, and the last data
	// cluster need not be written whole.
	bad := func(off, size int64) bool {
		return off < cs || off+size-fileEnd >= cs
	}
	for i, ent := range img.l1 {
		l2off := int64(ent & l1OffsetMask)
		if l2off == 0 {
			continue
		}
		if l2off&(cs-1) != 0 || bad(l2off, cs) {
			img.l1[i] = 0
			if err := img.writeL1Entry(int64(i)); err != nil {
				return err
			}
			continue
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		for j := int64(0); j < img.l2Entries; j++ {
			l2e, bm := img.l2Entry(e.data, j)
			var invalid bool
			if l2e&oflagCompressed != 0 {
				off, size := img.compressedRange(l2e)
				invalid = img.external || bad(off, size)
			} else if host := int64(l2e & l2OffsetMask); l2e&img.l2ReservedMask() != 0 {
				invalid = true
			} else if host&(cs-1) != 0 {
				// As check_refcounts_l2: an unaligned entry that holds
				// data is left alone (its data cannot be found, reads
				// keep failing); one that holds none (zero flag, or no
				// allocated subcluster) loses its host offset only: a
				// zero cluster, or with extended L2 entries an entry
				// whose bitmap still says which subclusters read zeroes
				// and which the backing file (iotest 271).
				if !img.misalignedHoldsData(l2e, bm) {
					img.dropHostOffset(e, j)
				}
				continue
			} else if host != 0 && !img.external {
				invalid = bad(host, cs) // (the data file has no such bound)
			}
			if !invalid {
				continue
			}
			var repl uint64
			if img.hdr.version >= 3 && !img.extL2 {
				repl = oflagZero
			}
			img.setL2Entry(e.data, j, repl)
			if img.extL2 {
				img.setL2Bitmap(e.data, j, allSubclustersZero)
			}
			e.dirty = true
		}
	}
	return nil
}

// l2ReservedMask covers the bits of a standard L2 entry that must be zero
// (1-8 and 56-61; bit 0 too with extended L2, where zero state lives in
// the bitmap).
func (img *Image) l2ReservedMask() uint64 {
	if img.extL2 {
		return 0x3f000000000001ff
	}
	return 0x3f000000000001fe
}

// misalignedHoldsData reports whether an L2 entry (and its subcluster
// bitmap) has data to lose: without extended L2 entries, unless it has the
// zero flag; with them, when some subcluster is allocated.
func (img *Image) misalignedHoldsData(l2e, bm uint64) bool {
	if img.extL2 {
		return bm&allSubclustersAllocated != 0
	}
	return l2e&oflagZero == 0
}

// dropHostOffset clears the host offset of entry j of L2 table e, keeping
// what it reads: a zero cluster, or with extended L2 entries the same
// subcluster bitmap (zeroes and backing data as before).
func (img *Image) dropHostOffset(e *cacheEntry, j int64) {
	if img.extL2 {
		img.setL2Entry(e.data, j, 0)
	} else {
		img.setL2Entry(e.data, j, oflagZero)
	}
	e.dirty = true
}
