package qcow2

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// L1/L2 entry bits (spec "Cluster mapping"): bit 63 COPIED (refcount
// exactly 1, accurate only in tables reachable from the active L1), bit 62
// compressed (L2 only), bit 0 reads-as-zero (standard L2 entries, version
// 3), bits 9-55 the cluster-aligned host offset. subclusters is the count
// per cluster of an extended L2 entry (QEMU's docs/interop/qcow2.txt,
// "Extended L2 Entries"; not in the 1.2 spec).
const (
	oflagCopied     = 1 << 63
	oflagCompressed = 1 << 62
	oflagZero       = 1 << 0
	l1OffsetMask    = 0x00fffffffffffe00
	l2OffsetMask    = 0x00fffffffffffe00
	subclusters     = 32 // per cluster with extended L2 entries
)

// mapKind is what a guest range resolves to.
type mapKind uint8

const (
	mapUnallocated mapKind = iota // read from the backing file (or zeroes)
	mapZero                       // reads as zeroes
	mapData                       // data at host offset
	mapCompressed                 // compressed cluster, descriptor in l2e
)

// mapping is the answer to "where is this guest range", computed under the
// metadata lock so that data I/O can run without it. kind says how to read
// the range (see mapKind).
type mapping struct {
	kind   mapKind
	host   int64  // mapData, and mapZero in a host cluster: host offset of the first byte
	length int64  // bytes of guest range covered, > 0
	l2e    uint64 // the raw L2 entry (compressed descriptor, copied flag)
	// writable: mapData whose clusters all have refcount 1 (copied flag)
	// and no zero flag, so the range can be overwritten in place.
	writable bool
}

// l2Index splits a guest offset into L1 and L2 indices.
func (img *Image) l2Index(off int64) (l1i, l2i int64) {
	c := off >> img.clusterBits
	return c / img.l2Entries, c % img.l2Entries
}

// l2Entry reads entry i (and, with extended L2, its subcluster bitmap) of
// a cached table: 8 bytes per entry, or 16 with extended L2 (the entry,
// then the bitmap).
func (img *Image) l2Entry(tbl []byte, i int64) (uint64, uint64) {
	if img.extL2 {
		return binary.BigEndian.Uint64(tbl[i*16:]), binary.BigEndian.Uint64(tbl[i*16+8:])
	}
	return binary.BigEndian.Uint64(tbl[i*8:]), 0
}

// setL2Entry stores the first word of entry i (the offset and flags); the
// bitmap of an extended entry is setL2Bitmap's. It only changes the cached
// table: callers mark the cache entry dirty.
func (img *Image) setL2Entry(tbl []byte, i int64, v uint64) {
	binary.BigEndian.PutUint64(tbl[i<<img.l2EntryShift:], v)
}

// allSubclustersAllocated is the extended L2 bitmap of a fully written
// cluster: every allocation bit (0-31) set, no zero bit (32-63).
const allSubclustersAllocated = 0xffffffff

// allSubclustersZero reads the whole cluster as zeroes.
const allSubclustersZero = 0xffffffff << 32

// setL2Bitmap sets the subcluster bitmap of extended L2 entry i.
func (img *Image) setL2Bitmap(tbl []byte, i int64, bm uint64) {
	binary.BigEndian.PutUint64(tbl[i*16+8:], bm)
}

// l2TableOffset returns the validated L2 table offset from L1 entry l1i (0
// when unallocated, or when l1i is past the table: a snapshot's L1 may be
// shorter than the active one). Flags and reserved bits are masked off;
// an unaligned offset or one inside the header cluster is corruption.
func (img *Image) l2TableOffset(l1 []uint64, l1i int64) (int64, error) {
	if l1i >= int64(len(l1)) {
		return 0, nil
	}
	off := int64(l1[l1i] & l1OffsetMask)
	if off&(img.clusterSize-1) != 0 {
		return 0, corruptf("L2 table offset %#x (L1 index %d) is not cluster aligned", off, l1i)
	}
	if off != 0 && off < img.clusterSize {
		return 0, corruptf("L2 table at offset %#x overlaps the header", off)
	}
	return off, nil
}

// resolve maps the guest range [off, off+n) (n > 0, inside the disk) to
// its first run of uniform kind. Contiguous clusters of one kind within one
// L2 table are coalesced. Runs under img.mu. The answer stays valid after
// mu is released only as long as nothing changes the tree: ReadAt and
// writeAt rely on gate and inflight for that.
func (img *Image) resolve(off, n int64) (mapping, error) {
	return img.resolveIn(img.l1, off, n)
}

// resolveIn is resolve in the tree of l1 (the active table or a
// snapshot's). Ranges beyond l1 are unallocated. Runs never cross an L2
// table, except unallocated ones over L1 entries without a table, which
// are merged; data runs must be host-contiguous and share the copied
// flag; a compressed cluster is always a run of its own; with extended
// L2 a run ends at the cluster's end (classifySubcluster splits it).
func (img *Image) resolveIn(l1 []uint64, off, n int64) (mapping, error) {
	cs := img.clusterSize
	l1i, l2i := img.l2Index(off)
	inCluster := off & (cs - 1)
	// Bytes until the end of this L2 table's range, capped at n.
	limit := min(n, (img.l2Entries-l2i)*cs-inCluster)
	l2off, err := img.l2TableOffset(l1, l1i)
	if err != nil {
		return mapping{}, err
	}
	if l2off == 0 {
		// Following L1 entries without an L2 table extend the run.
		length := limit
		for i := l1i + 1; length < n && i < int64(len(l1)) && l1[i]&l1OffsetMask == 0; i++ {
			length = min(n, length+img.l2Entries*cs)
		}
		return mapping{kind: mapUnallocated, length: length}, nil
	}
	e, err := img.l2c.get(l2off)
	if err != nil {
		return mapping{}, err
	}
	tbl := e.data
	first, bitmap := img.l2Entry(tbl, l2i)
	m, err := img.classify(first, bitmap, off)
	if err != nil {
		return m, err
	}
	if img.extL2 && m.kind != mapCompressed {
		m.length = min(m.length, limit) // subcluster runs end at the cluster
		return m, nil
	}
	m.length = min(cs-inCluster, limit)
	if m.kind == mapCompressed {
		return m, nil
	}
	for i := l2i + 1; m.length < limit; i++ {
		next, _ := img.l2Entry(tbl, i)
		nm, err := img.classify(next, 0, off&^(cs-1)+(i-l2i)*cs)
		if err != nil || nm.kind != m.kind {
			break
		}
		if m.kind == mapData || m.kind == mapZero && m.host != 0 {
			if nm.host != m.host-inCluster+(i-l2i)*cs || nm.writable != m.writable {
				break
			}
		}
		if m.kind == mapZero && m.host == 0 && nm.host != 0 {
			break // zero clusters with and without a host cluster differ
		}
		m.length = min(m.length+cs, limit)
	}
	return m, nil
}

// classify decodes one L2 entry for the guest offset off (its cluster
// for the fixed mapping of an external data file, its offset within the
// cluster for the run). A compressed entry is returned undecoded
// (compressedRange does that when it is read); for a standard entry the
// zero flag wins over the host offset, as the spec says (a preallocated
// zero cluster reads zeroes, not its host data, nor the backing file).
func (img *Image) classify(l2e, bitmap uint64, off int64) (mapping, error) {
	cs := img.clusterSize
	m := mapping{l2e: l2e}
	if l2e&oflagCompressed != 0 {
		if img.external {
			return m, corruptf("compressed cluster entry %#x in an image with an external data file", l2e)
		}
		if img.extL2 && bitmap != 0 {
			return m, corruptf("compressed cluster entry %#x has a non-zero subcluster bitmap", l2e)
		}
		m.kind = mapCompressed
		return m, nil
	}
	host, allocated := img.hostCluster(l2e)
	if host&(cs-1) != 0 {
		return m, corruptf("cluster allocation offset %#x unaligned (L2 entry %#x)", host, l2e)
	}
	if img.external && allocated {
		if err := img.checkDataHost(host, off); err != nil {
			return m, err
		}
	} else if host != 0 && host < cs {
		return m, corruptf("data cluster at offset %#x overlaps the header", host)
	}
	if img.extL2 {
		return img.classifySubcluster(host, allocated, bitmap, off, l2e&oflagCopied != 0)
	}
	switch {
	case l2e&oflagZero != 0:
		m.kind = mapZero
		if host != 0 {
			// A preallocated zero cluster (QCOW2_CLUSTER_ZERO_ALLOC):
			// block status reports its host offset, as QEMU's.
			m.host = host + off&(cs-1)
		}
	case !allocated:
		m.kind = mapUnallocated
	default:
		m.kind = mapData
		m.host = host + off&(cs-1)
		m.writable = l2e&oflagCopied != 0
		if !img.external && host >= img.fileEnd.Load() {
			return m, corruptf("data cluster at offset %#x lies beyond the end of the file", host)
		}
	}
	return m, nil
}

// hostCluster returns the host cluster offset an uncompressed L2 entry
// holds and whether it names a cluster at all. Offset 0 means none, except
// in an external data file, where guest cluster 0 lives at host offset 0
// and the copied flag (set on every external data cluster) marks it
// allocated, as QEMU's qcow2_get_cluster_type reads it; a standard entry
// with the zero flag and offset 0 is a plain zero cluster even there.
func (img *Image) hostCluster(l2e uint64) (int64, bool) {
	host := int64(l2e & l2OffsetMask)
	if host != 0 {
		return host, true
	}
	zero := !img.extL2 && l2e&oflagZero != 0
	return 0, img.external && l2e&oflagCopied != 0 && !zero
}

// classifySubcluster decodes an extended L2 entry: bits 0-31 of the bitmap
// say "allocated", bits 32-63 "reads as zeroes", per subcluster. The run is
// extended over following subclusters of the same state. Both bits set is
// corruption, and so is an allocated subcluster without a host cluster;
// neither set reads from the backing file (or zeroes), as an unallocated
// cluster does. Subcluster i is bytes [i*cs/32, (i+1)*cs/32) of the
// cluster.
func (img *Image) classifySubcluster(host int64, allocated bool, bitmap uint64, off int64, l2eCopied bool) (mapping, error) {
	cs := img.clusterSize
	sc := cs / subclusters
	inCluster := off & (cs - 1)
	state := func(i int64) (mapKind, error) {
		alloc, zero := bitmap>>i&1 != 0, bitmap>>(32+i)&1 != 0
		switch {
		case alloc && zero:
			return 0, corruptf("subcluster %d is both allocated and zero (bitmap %#x)", i, bitmap)
		case alloc:
			if !allocated {
				return 0, corruptf("subcluster %d allocated in an unallocated cluster", i)
			}
			return mapData, nil
		case zero:
			return mapZero, nil
		}
		return mapUnallocated, nil
	}
	first := inCluster / sc
	k, err := state(first)
	if err != nil {
		return mapping{}, err
	}
	end := first + 1
	for ; end < subclusters; end++ {
		if s, err := state(end); err != nil || s != k {
			break
		}
	}
	m := mapping{kind: k, length: end*sc - inCluster}
	if k == mapZero && host != 0 {
		m.host = host + inCluster
	}
	if k == mapData {
		m.host = host + inCluster
		m.writable = l2eCopied
		if !img.external && host >= img.fileEnd.Load() {
			return m, corruptf("data cluster at offset %#x lies beyond the end of the file", host)
		}
	}
	return m, nil
}

// loadL1 reads an L1 table of n entries at off, entries kept as on disk
// (flags included). The caller has bounded n (parseHeader: at most
// maxL1Bytes; snapshot tables likewise).
func (img *Image) loadL1(off int64, n uint32) ([]uint64, error) {
	raw := make([]byte, int64(n)*8)
	if err := img.readMeta(raw, off); err != nil {
		return nil, fmt.Errorf("reading L1 table at %#x: %w", off, err)
	}
	l1 := make([]uint64, n)
	for i := range l1 {
		l1[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	return l1, nil
}

// writeL1Entry writes active L1 entry i through to disk, without a sync:
// the L1 write is the last step of an allocation, and what it points to
// has been written (and, where the order matters, synced) before it.
func (img *Image) writeL1Entry(i int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.l1[i])
	img.event(block.EventL1Update)
	if err := img.writeMeta(b[:], int64(img.hdr.l1Off)+i*8); err != nil {
		return fmt.Errorf("writing L1 entry %d: %w", i, err)
	}
	return nil
}

// l2ForWrite returns the offset of a writable (refcount 1) L2 table for L1
// index l1i, allocating a new table or copying a shared one (QEMU's
// l2_allocate). Order: refcounts, new table, L1 entry, then the old
// table's reference is dropped.
func (img *Image) l2ForWrite(l1i int64) (int64, error) {
	if l1i >= int64(len(img.l1)) {
		return 0, fmt.Errorf("guest offset beyond the L1 table (index %d of %d)", l1i, len(img.l1))
	}
	old, err := img.l2TableOffset(img.l1, l1i)
	if err != nil {
		return 0, err
	}
	if old != 0 && img.l1[l1i]&oflagCopied != 0 {
		return old, nil
	}
	var saved []byte
	if old != 0 {
		e, err := img.l2c.get(old)
		if err != nil {
			return 0, err
		}
		saved = append(img.scratchTable[:0], e.data...)
		img.scratchTable = saved
	}
	nw, err := img.allocClusters(1)
	if err != nil {
		return 0, err
	}
	e, err := img.l2c.getEmpty(nw)
	if err != nil {
		return 0, err
	}
	if saved != nil {
		copy(e.data, saved)
		// The old table is shared, so every cluster it maps is too: no
		// entry of the copy may keep a (stale) copied flag, or a write
		// would land in place inside another tree's data.
		for j := int64(0); j < img.l2Entries; j++ {
			if l2e, _ := img.l2Entry(e.data, j); l2e&oflagCopied != 0 {
				img.setL2Entry(e.data, j, l2e&^oflagCopied)
			}
		}
	}
	img.event(block.EventL2AllocWrite)
	if err := img.l2c.writeThrough(e); err != nil {
		return 0, err
	}
	if err := img.barrier(); err != nil {
		return 0, err
	}
	img.l1[l1i] = uint64(nw) | oflagCopied
	if err := img.writeL1Entry(l1i); err != nil {
		return 0, err
	}
	if old != 0 {
		if err := img.dropRef(old); err != nil {
			return 0, err
		}
	}
	return nw, nil
}

// dropRef drops one reference to a metadata cluster, forgetting its cached
// copy when it becomes free, so that a later allocation of the same host
// cluster (as data, say) is never overwritten by a stale dirty table.
func (img *Image) dropRef(off int64) error {
	if err := img.addRefcount(off>>img.clusterBits, -1); err != nil {
		return err
	}
	rc, err := img.getRefcount(off >> img.clusterBits)
	if err == nil && rc == 0 {
		img.l2c.drop(off)
	}
	return err
}

// compressedRange returns the host byte range of a compressed cluster
// descriptor (spec "Compressed Clusters Descriptor"), read as QEMU's
// current docs/interop/qcow2.txt words it: bits 0 to x-1 are the host
// offset (any byte), the bits from x up count the 512-byte sectors used
// beyond the one holding the offset. size therefore runs from off to the
// end of the last sector and may include a few bytes past the compressed
// stream.
func (img *Image) compressedRange(l2e uint64) (off, size int64) {
	x := 62 - (img.clusterBits - 8)
	desc := l2e & (1<<62 - 1)
	off = int64(desc & (1<<x - 1))
	sectors := int64(desc>>x) + 1
	size = sectors*512 - off&511
	return off, size
}

// releaseEntry drops the references an L2 entry held (data or compressed
// clusters). The L2 change must already be on disk. External data
// clusters are not refcounted: nothing to drop.
func (img *Image) releaseEntry(l2e uint64) error {
	if img.external {
		return nil
	}
	if l2e&oflagCompressed != 0 {
		off, size := img.compressedRange(l2e)
		first := off >> img.clusterBits
		last := (off + size - 1) >> img.clusterBits
		for c := first; c <= last; c++ {
			if err := img.addRefcount(c, -1); err != nil {
				return err
			}
		}
		return nil
	}
	if host := int64(l2e & l2OffsetMask); host != 0 {
		return img.addRefcount(host>>img.clusterBits, -1)
	}
	return nil
}
