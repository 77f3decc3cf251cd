package qcow2

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
)

// Subcluster writes (extended L2 entries): a write covering part of a
// cluster allocates only the subclusters it touches, as QEMU does, so
// the rest keeps reading from the backing file or as zeroes without a
// copy. Clusters shared with a snapshot or compressed take the
// whole-cluster copy-on-write path (allocWrite).

// subclusterWrite writes the start of p at guest offset off, up to the end
// of its cluster. Called with img.mu held; returns with it released.
//
// Order: a new host cluster's refcount (cache), the data, then the L2
// entry and bitmap (cache, written after the refcount blocks).
//
// A cluster this image owns (COPIED) keeps its host cluster: the written
// subclusters are stored in place and their allocation bits set, their
// zero bits cleared (QEMU's docs/interop/qcow2.txt, "Extended L2
// Entries": bit x allocated, bit 32+x reads as zeroes, never both). An
// unallocated cluster gets a fresh host cluster of which only the
// touched subclusters are written. The entry is re-read after the data
// write, under mu, and must not have changed: inflight kept every other
// writer of this guest cluster waiting.
func (img *Image) subclusterWrite(p []byte, off int64) (int, error) {
	cs := img.clusterSize
	sc := cs / subclusters
	c0 := off >> img.clusterBits
	l1i, l2i := img.l2Index(off)
	l2off, err := img.l2ForWrite(l1i)
	if err != nil {
		img.mu.Unlock()
		return 0, err
	}
	e, err := img.l2c.get(l2off)
	if err != nil {
		img.mu.Unlock()
		return 0, err
	}
	ent, bm := img.l2Entry(e.data, l2i)
	host, allocated := img.hostCluster(ent)
	if ent&oflagCompressed != 0 || (allocated && ent&oflagCopied == 0) {
		return img.allocWrite(p, off) // shared or compressed: whole-cluster COW
	}
	if allocated && img.external {
		if err := img.checkDataHost(host, off); err != nil {
			img.mu.Unlock()
			return 0, err
		}
	} else if allocated && host >= img.fileEnd.Load() {
		img.mu.Unlock()
		return 0, corruptf("data cluster at offset %#x lies beyond the end of the file", host)
	}
	old := l2Pair{ent, bm}
	inC := off & (cs - 1)
	end := min(inC+int64(len(p)), cs)
	sa, sb := inC&^(sc-1), (end+sc-1)&^(sc-1)
	if !allocated {
		if host, err = img.allocData(c0, 1); err != nil {
			img.mu.Unlock()
			return 0, err
		}
	}
	ch := make(chan struct{})
	img.inflight[c0] = ch
	img.mu.Unlock()

	err = img.writeSubclusters(p[:end-inC], c0<<img.clusterBits, inC, sa, sb, host, old)

	img.mu.Lock()
	defer func() {
		delete(img.inflight, c0)
		close(ch)
		img.mu.Unlock()
	}()
	if err != nil {
		return 0, err // a fresh cluster leaks; nothing references it
	}
	if l2off, err = img.l2ForWrite(l1i); err != nil {
		return 0, err
	}
	if e, err = img.l2c.get(l2off); err != nil {
		return 0, err
	}
	cur, curBm := img.l2Entry(e.data, l2i)
	if cur != ent {
		return 0, fmt.Errorf("internal: L2 entry of guest cluster %d changed during a subcluster write", c0)
	}
	var bits uint64
	for i := sa / sc; i < sb/sc; i++ {
		bits |= 1 << i
	}
	img.setL2Entry(e.data, l2i, uint64(host)|oflagCopied)
	img.setL2Bitmap(e.data, l2i, (curBm|bits)&^(bits<<32))
	e.dirty = true
	return int(end - inC), nil
}

// writeSubclusters writes data (guest cluster at g, bytes [inC, inC+len))
// as whole subclusters [sa, sb) at host, filling the partial first and
// last subcluster from the cluster's old state (its data, zeroes, or the
// backing file, per subcluster). Bytes past the virtual disk's end are
// zero. sa and sb are byte offsets in the cluster, subcluster-aligned.
// Runs without mu (inflight holds the guest cluster).
func (img *Image) writeSubclusters(data []byte, g, inC, sa, sb, host int64, old l2Pair) error {
	sc := img.clusterSize / subclusters
	bp := img.getBuf()
	defer img.putBuf(bp)
	buf := (*bp)[:sb-sa]
	fill := func(at int64) error { // one subcluster at cluster offset at
		m, err := img.classify(old.e, old.bm, g+at)
		if err != nil {
			return err
		}
		dst := buf[at-sa : at-sa+sc]
		n := min(sc, img.Size()-(g+at))
		clear(dst[max(n, 0):])
		if n <= 0 {
			return nil
		}
		m.length = n
		return img.readMapped(dst[:n], g+at, m)
	}
	if inC != sa {
		if err := fill(sa); err != nil {
			return err
		}
	}
	if end := inC + int64(len(data)); end != sb && (sb-sc != sa || inC == sa) {
		if err := fill(sb - sc); err != nil {
			return err
		}
	}
	copy(buf[inC-sa:], data)
	img.event(block.EventWriteAIO)
	if _, err := img.data.WriteAt(buf, host+sa); err != nil {
		return fmt.Errorf("writing subclusters at %#x: %w", host+sa, err)
	}
	return nil
}
