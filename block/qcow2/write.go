package qcow2

import (
	"errors"

	"github.com/petrel-vmm/petrel/block"
)

// errReadOnly is returned by every mutating call on a read-only image,
// before any lock is taken or anything is read (the file may well be
// open without write access).
var errReadOnly = errors.New("qcow2 image is opened read-only")

// writeAt writes guest data. Clusters owned by this image alone are
// overwritten in place without the metadata lock; others (unallocated,
// zero, compressed, shared with a snapshot) get fresh clusters. A write
// to a guest cluster another writer is allocating waits for that
// allocation (inflight) and then resolves again, so the second writer
// sees, and overwrites in place, the first one's new cluster instead of
// allocating a second one. With extended L2, a write not covering whole
// clusters goes through subclusterWrite, which can allocate single
// subclusters.
func (img *Image) writeAt(p []byte, off int64) (int, error) {
	if img.readOnly {
		return 0, errReadOnly
	}
	if err := img.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	img.gate.RLock()
	defer img.gate.RUnlock()
	done := 0
	for done < len(p) {
		cur := off + int64(done)
		img.mu.Lock()
		if ch, busy := img.inflight[cur>>img.clusterBits]; busy {
			img.mu.Unlock()
			<-ch
			continue
		}
		m, err := img.resolve(cur, int64(len(p)-done))
		if err != nil {
			img.mu.Unlock()
			return done, err
		}
		if m.kind == mapData && m.writable {
			img.mu.Unlock()
			img.event(block.EventWriteAIO)
			if err := img.writeData(p[done:done+int(m.length)], cur, m.host); err != nil {
				return done, err
			}
			done += int(m.length)
			continue
		}
		var n int
		// Encrypted images fill whole clusters by copy-on-write instead
		// (the subcluster path writes guest bytes as they are).
		if img.extL2 && img.hdr.cryptMethod == cryptNone && (cur&(img.clusterSize-1) != 0 || int64(len(p)-done) < img.clusterSize) {
			n, err = img.subclusterWrite(p[done:], cur) // releases img.mu
		} else {
			n, err = img.allocWrite(p[done:], cur) // releases img.mu
		}
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// allocWrite writes the start of p at guest offset off into newly
// allocated clusters: as many consecutive clusters of one L2 table as need
// allocation. Called with img.mu held; returns with it released.
//
// The run stops at the first cluster that another writer is allocating
// or that can be written in place, so one call never waits; the host
// clusters are allocated as one contiguous run, which keeps the guest's
// sequential writes sequential in the file. Each guest cluster of the run
// is listed in inflight, on one channel, until its L2 entry is set.
//
// Order (crash consistency): refcounts of the new clusters (cache), data
// written to them, then the L2 entries (cache, written after the refcount
// blocks). Old clusters are released only after the L2 table with the new
// entries is on disk.
func (img *Image) allocWrite(p []byte, off int64) (int, error) {
	cb := img.clusterBits
	c0 := off >> cb
	l1i, l2i := img.l2Index(off)
	end := off + int64(len(p))
	maxK := min((end-1)>>cb-c0+1, img.l2Entries-l2i)

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
	olds := make([]l2Pair, 0, min(maxK, 64))
	first, bm := img.l2Entry(e.data, l2i)
	olds = append(olds, l2Pair{first, bm})
	for k := int64(1); k < maxK; k++ {
		if _, busy := img.inflight[c0+k]; busy {
			break
		}
		ent, bm := img.l2Entry(e.data, l2i+k)
		if img.inPlace(ent, bm) {
			break // allocated in place: the next loop round writes it directly
		}
		olds = append(olds, l2Pair{ent, bm})
	}
	k := int64(len(olds))
	host, err := img.allocData(c0, k)
	if err != nil {
		img.mu.Unlock()
		return 0, err
	}
	ch := make(chan struct{})
	for i := range k {
		img.inflight[c0+i] = ch
	}
	img.mu.Unlock()

	wEnd := min(end, (c0+k)<<cb)
	img.event(block.EventWriteAIO)
	err = img.writeNewClusters(p[:wEnd-off], off, host, olds)

	img.mu.Lock()
	defer func() {
		for i := range k {
			delete(img.inflight, c0+i)
		}
		close(ch)
		img.mu.Unlock()
	}()
	if err != nil {
		// The new clusters leak; nothing references them. (An external
		// data file's clusters are not refcounted: nothing leaks, and
		// nothing may be freed, iotest 289.)
		return 0, err
	}
	if err := img.linkClusters(l1i, l2i, host, olds); err != nil {
		return 0, err
	}
	return int(wEnd - off), nil
}

// writeNewClusters writes p (guest offset off) into the k = len(olds) new
// host clusters at host, filling partially written clusters from their old
// content (copy-on-write). Only the first and last clusters can be partial;
// the fully covered middle goes out in one write straight from p. Runs
// without mu: the new clusters are reachable from no table yet, and
// inflight keeps other writers off their guest clusters.
func (img *Image) writeNewClusters(p []byte, off, host int64, olds []l2Pair) error {
	cs := img.clusterSize
	k := int64(len(olds))
	gStart := off &^ (cs - 1) // guest offset of the first cluster
	wEnd := off + int64(len(p))
	lo, hi := int64(0), k // clusters [lo, hi) are fully covered by p
	partial := func(i int64) error {
		bp := img.getBuf()
		defer img.putBuf(bp)
		buf := *bp
		g := gStart + i*cs
		if err := img.cowRead(buf, g, olds[i]); err != nil {
			return err
		}
		from, to := max(off, g), min(wEnd, g+cs)
		copy(buf[from-g:to-g], p[from-off:to-off])
		return img.writeData(buf, g, host+i*cs)
	}
	if off != gStart || (k == 1 && wEnd < gStart+cs) {
		if err := partial(0); err != nil {
			return err
		}
		lo = 1
	}
	if hi > lo && wEnd < gStart+k*cs {
		if err := partial(k - 1); err != nil {
			return err
		}
		hi = k - 1
	}
	if hi > lo {
		g := gStart + lo*cs
		if err := img.writeData(p[g-off:gStart+hi*cs-off], g, host+lo*cs); err != nil {
			return err
		}
	}
	return nil
}

// cowRead fills buf with the current content of the guest cluster at g,
// described by its old L2 entry: data, zeroes, the backing file (for
// unallocated runs, as the spec's "Cluster mapping" says reads go there),
// or a decompressed cluster. Bytes past the virtual size are zero.
func (img *Image) cowRead(buf []byte, g int64, old l2Pair) error {
	// The last cluster may extend beyond the virtual size.
	n := min(int64(len(buf)), img.Size()-g)
	clear(buf[n:])
	// Runs of uniform state: the whole cluster, or subclusters.
	for done := int64(0); done < n; {
		m, err := img.classify(old.e, old.bm, g+done)
		if err != nil {
			return err
		}
		if m.kind == mapCompressed {
			return img.readMapped(buf[:n], g, m)
		}
		if img.extL2 {
			m.length = min(m.length, n-done) // one subcluster run
		} else {
			m.length = n - done
		}
		if err := img.readMapped(buf[done:done+m.length], g+done, m); err != nil {
			return err
		}
		done += m.length
	}
	return nil
}

// l2Pair is an L2 entry with its subcluster bitmap (0 without extended L2):
// e is the 64-bit entry as on disk (offset and flags), bm the second
// 64-bit word of an extended entry (allocation and zero bits per
// subcluster).
type l2Pair struct{ e, bm uint64 }

// inPlace reports whether a cluster can be overwritten where it is: owned
// by this image alone (copied flag), plain data, and with extended L2 every
// subcluster allocated. A zero-flagged cluster that kept its host cluster
// is not overwritten in place: it gets a fresh cluster like an unallocated
// one, and the old one is released.
func (img *Image) inPlace(e, bm uint64) bool {
	if e&oflagCopied == 0 || e&oflagCompressed != 0 {
		return false
	}
	if _, allocated := img.hostCluster(e); !allocated {
		return false
	}
	if img.extL2 {
		return bm == allSubclustersAllocated
	}
	return e&oflagZero == 0
}

// linkClusters points L2 entries [l2i, l2i+len(olds)) of table l1i at the
// new clusters from host and releases what the old entries held. The new
// entries carry QCOW_OFLAG_COPIED: their refcount is exactly 1. When
// nothing is released the L2 table just stays dirty in the cache (written
// at the next flush or eviction, after the refcount blocks); otherwise it
// is written now, behind a barrier, before the old clusters' refcounts
// drop, so a crash can leak the old clusters but never leave an entry
// pointing at a freed one.
func (img *Image) linkClusters(l1i, l2i, host int64, olds []l2Pair) error {
	l2off, err := img.l2ForWrite(l1i)
	if err != nil {
		return err
	}
	e, err := img.l2c.get(l2off)
	if err != nil {
		return err
	}
	release := false
	for i, old := range olds {
		img.setL2Entry(e.data, l2i+int64(i), uint64(host+int64(i)*img.clusterSize)|oflagCopied)
		if img.extL2 {
			img.setL2Bitmap(e.data, l2i+int64(i), allSubclustersAllocated)
		}
		if !img.external && (old.e&oflagCompressed != 0 || old.e&l2OffsetMask != 0) {
			release = true // (an external data cluster stays where it is)
		}
	}
	e.dirty = true
	if !release {
		return nil
	}
	if err := img.l2c.writeThrough(e); err != nil {
		return err
	}
	if err := img.barrier(); err != nil {
		return err
	}
	for _, old := range olds {
		if err := img.releaseEntry(old.e); err != nil {
			return err
		}
	}
	return nil
}
