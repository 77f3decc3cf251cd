package qed

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// defaultCacheBytes is the L2 cache budget when Options.CacheSize is 0:
// 32 tables of the default 256 KiB, like QEMU's QED L2 cache.
const defaultCacheBytes = 32 * defaultTableSize * defaultClusterSize

// tableCache holds L2 tables by file offset. Tables are write-through
// (every update reaches the file before the cache), so eviction is free.
// It is guarded by Image.mu. max is the capacity in tables; tables maps a
// table's file offset to its decoded entries, which callers may read and
// update in place under mu (setL2Entries does, after writing the file).
type tableCache struct {
	max    int
	tables map[int64][]uint64
	order  []int64 // insertion order, for FIFO eviction
}

// newTableCache sizes a cache to budget bytes (Options.CacheSize; 0 for
// the default), and never below 4 tables.
func newTableCache(budget, tableBytes int64) *tableCache {
	if budget <= 0 {
		budget = defaultCacheBytes
	}
	return &tableCache{max: int(max(4, budget/tableBytes)), tables: map[int64][]uint64{}}
}

// get returns the cached table at file offset off, or nil.
func (c *tableCache) get(off int64) []uint64 { return c.tables[off] }

// put caches t as the table at off, evicting the oldest tables first
// (FIFO, not LRU). A slice already handed out stays valid after eviction;
// it is just no longer shared with later lookups.
func (c *tableCache) put(off int64, t []uint64) {
	if _, ok := c.tables[off]; ok {
		c.tables[off] = t
		return
	}
	for len(c.tables) >= c.max && len(c.order) > 0 {
		delete(c.tables, c.order[0])
		c.order = c.order[1:]
	}
	c.tables[off] = t
	c.order = append(c.order, off)
}

// drop empties the cache, after check or MakeEmpty rewrote tables behind
// it.
func (c *tableCache) drop() {
	c.tables = map[int64][]uint64{}
	c.order = nil
}

// Cluster kinds a guest offset can map to.
type kind int

const (
	kindUnallocated kind = iota // read from the backing file (or zeroes)
	kindZero                    // zero cluster: reads zeroes, hides backing
	kindData                    // data at a host offset
)

// validCluster reports whether a data or table offset is aligned and lies
// in the image file past the header (spec "Tables": offsets aligned to
// cluster_size; "Consistency checking": within the file). A table must
// also fit whole, which l2Table checks separately.
func (img *Image) validCluster(off uint64) bool {
	return off%uint64(img.clusterSize) == 0 &&
		off >= uint64(img.hdr.HeaderSize)*uint64(img.clusterSize) &&
		off < uint64(img.fileSize)
}

// indexes splits a guest offset into L1 and L2 indexes (spec "Logical
// offset translation"): the cluster number's high part indexes L1, its low
// log2(TABLE_NOFFSETS) bits L2; the byte offset within the cluster is the
// caller's.
func (img *Image) indexes(off int64) (l1i, l2i int64) {
	c := off >> img.clusterBits
	return c / img.tableEntries, c % img.tableEntries
}

// l2Table returns the L2 table for L1 index i, or nil if unallocated, with
// its file offset. Caller holds mu. A table comes from the cache or is read
// and cached; an L1 entry that is misaligned or leaves no room for a whole
// table before the end of the file is an error, not a read past the end.
func (img *Image) l2Table(i int64) ([]uint64, int64, error) {
	off := img.l1[i]
	if off == 0 {
		return nil, 0, nil
	}
	if !img.validCluster(off) || int64(off) > img.fileSize-img.tableBytes {
		return nil, 0, fmt.Errorf("corrupt L1 entry %d: L2 table offset %#x", i, off)
	}
	if t := img.cache.get(int64(off)); t != nil {
		return t, int64(off), nil
	}
	t, err := img.readTable(int64(off))
	if err != nil {
		return nil, 0, fmt.Errorf("reading L2 table at %#x: %w", off, err)
	}
	img.cache.put(int64(off), t)
	return t, int64(off), nil
}

// classify interprets one L2 entry (spec "Data cluster offsets"): 0
// unallocated, 1 zero, else a cluster offset, which must be aligned and
// inside the file; anything else is corruption, reported rather than
// followed. The reserved low 12 bits are covered by the alignment check.
func (img *Image) classify(e uint64) (kind, int64, error) {
	switch {
	case e == 0:
		return kindUnallocated, 0, nil
	case e == entryZero:
		return kindZero, 0, nil
	case !img.validCluster(e):
		return 0, 0, fmt.Errorf("corrupt L2 entry: cluster offset %#x", e)
	}
	return kindData, int64(e), nil
}

// mapRange finds the run of uniform allocation starting at guest offset
// off, at most n bytes: its kind, the host offset of its first byte (data
// only) and its length. Data runs are host-contiguous. Caller holds mu.
// A missing L2 table makes its whole range one unallocated run, so a
// mostly empty image maps in a few steps; an allocated table is walked
// entry by entry. Offsets past the L1 table are an error (the caller
// bounds n by the image size, which validate bounds by the L1 table).
func (img *Image) mapRange(off, n int64) (kind, int64, int64, error) {
	var k kind
	var host, length int64
	for length < n {
		pos := off + length
		l1i, l2i := img.indexes(pos)
		if l1i >= int64(len(img.l1)) {
			return 0, 0, 0, fmt.Errorf("offset %#x beyond the L1 table", pos)
		}
		t, _, err := img.l2Table(l1i)
		if err != nil {
			return 0, 0, 0, err
		}
		var ck kind
		var ch int64
		span := img.tableEntries * img.clusterSize
		if t == nil {
			ck = kindUnallocated
			span -= pos & (span - 1) // the rest of this L2 table's range
		} else {
			if ck, ch, err = img.classify(t[l2i]); err != nil {
				return 0, 0, 0, err
			}
			span = img.clusterSize - pos&(img.clusterSize-1)
			ch += pos & (img.clusterSize - 1)
		}
		if length == 0 {
			k, host = ck, ch
		} else if ck != k || (k == kindData && ch != host+length) {
			break
		}
		length += min(span, n-length)
	}
	return k, host, length, nil
}

// writeL1Entry updates one L1 entry on disk, then in memory, so that the
// in-memory table never points at something the file does not. It does
// not sync: the L1 write is the last of an allocation, made durable by the
// next flush, and until then NEED_CHECK covers a crash.
func (img *Image) writeL1Entry(i int64, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	img.event(block.EventL1Update)
	if _, err := img.f.WriteAt(b[:], int64(img.hdr.L1TableOffset)+8*i); err != nil {
		return fmt.Errorf("writing L1 entry %d: %w", i, err)
	}
	img.l1[i] = v
	return nil
}

// setL2Entries points L2 entries [first, first+len(vals)) of L1 index l1i
// at vals, allocating the L2 table when needed. Order: a new L2 table is
// written whole before the L1 entry that makes it reachable. Caller holds
// mu and has already written the data the entries point to.
func (img *Image) setL2Entries(l1i, first int64, vals []uint64) error {
	t, toff, err := img.l2Table(l1i)
	if err != nil {
		return err
	}
	if t == nil {
		t = make([]uint64, img.tableEntries)
		copy(t[first:], vals)
		toff = img.fileSize
		img.event(block.EventL2Update)
		if _, err := img.f.WriteAt(encodeTable(t), toff); err != nil {
			return fmt.Errorf("writing new L2 table at %#x: %w", toff, err)
		}
		img.fileSize += img.tableBytes
		if err := img.writeL1Entry(l1i, uint64(toff)); err != nil {
			return err
		}
		img.cache.put(toff, t)
		return nil
	}
	b := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	img.event(block.EventL2Update)
	if _, err := img.f.WriteAt(b, toff+8*first); err != nil {
		return fmt.Errorf("writing L2 table at %#x: %w", toff, err)
	}
	copy(t[first:], vals)
	return nil
}
