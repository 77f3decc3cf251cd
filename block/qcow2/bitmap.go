package qcow2

import (
	"encoding/binary"
	"fmt"
)

// Persistent dirty bitmaps (QEMU's docs/interop/qcow2.txt, "Bitmaps
// extension"), kept as QEMU keeps them:
//
//   - The extension counts only while autoclear bit 0 is set; a writer
//     unaware of bitmaps clears the bit, and the bitmaps are then ignored
//     (and dropped from the header on the next writable open, their
//     clusters leaked, as qcow2_do_open).
//   - A writable open loads every consistent bitmap into memory and sets
//     the in-use flag of all of them on disk before any guest write, so a
//     crash leaves them marked inconsistent rather than silently stale.
//     Writes set the bits of the enabled (auto) bitmaps.
//   - Close stores each loaded bitmap anew (data clusters, then its table,
//     in directory order), then a new directory, then the header; only
//     after the header names the new directory are the old directory and
//     tables freed. Bitmaps that were in use at open are kept as they are.

// dirtyBitmap is one bitmap of the directory. bitmapEntry is its entry as
// on disk (tableOff 0 for a bitmap not stored yet); inconsistent says it
// was in use when opened, so its contents are unknown and kept untouched.
// chunks holds the loaded data, one slice per bitmap data cluster: nil
// reads as zeroes, allOnes (shared, never written) as ones.
type dirtyBitmap struct {
	bitmapEntry
	inconsistent bool
	loaded       bool
	chunks       [][]byte
}

func (b *dirtyBitmap) enabled() bool { return b.flags&bitmapFlagAuto != 0 }

// bitmapsExtension returns the bitmaps extension when it is in force
// (autoclear bit 0 set).
func (img *Image) bitmapsExtension() ([]byte, bool) {
	if img.hdr.autoclear&autoclearBitmaps == 0 {
		return nil, false
	}
	for _, e := range img.hdr.others {
		if e.typ == extBitmaps {
			return e.data, true
		}
	}
	return nil, false
}

// readBitmapDirectory reads and parses the directory the extension names,
// and checks each entry's table placement and size against the image.
func (img *Image) readBitmapDirectory() ([]bitmapEntry, error) {
	raw, ok := img.bitmapsExtension()
	if !ok {
		return nil, nil
	}
	ext, err := parseBitmapExt(raw)
	if err != nil {
		return nil, err
	}
	cs := uint64(img.clusterSize)
	if ext.dirOff == 0 || ext.dirOff%cs != 0 || ext.dirOff+ext.dirSize > uint64(img.fileEnd.Load()) {
		return nil, corruptf("bitmap directory (%d bytes at %#x) lies outside the image file", ext.dirSize, ext.dirOff)
	}
	dir := make([]byte, ext.dirSize)
	if err := img.readMeta(dir, int64(ext.dirOff)); err != nil {
		return nil, fmt.Errorf("reading bitmap directory: %w", err)
	}
	list, err := parseBitmapDir(dir, ext.count)
	if err != nil {
		return nil, err
	}
	for _, e := range list {
		if err := img.checkBitmapTablePlace(e); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// checkBitmapTablePlace checks that the entry's table is cluster aligned,
// inside the file and as long as the virtual size needs.
func (img *Image) checkBitmapTablePlace(e bitmapEntry) error {
	cs := uint64(img.clusterSize)
	want := bitmapTableEntries(img.hdr.size, e.granBits, img.clusterBits)
	switch {
	case bitmapTooLarge(img.hdr.size, e.granBits):
		return corruptf("bitmap %q: %v", e.name, errBitmapTooLarge)
	case e.tableOff == 0 || e.tableOff%cs != 0:
		return corruptf("bitmap %q: table offset %#x is not cluster aligned", e.name, e.tableOff)
	case e.tableOff+uint64(e.tableSize)*8 > uint64(img.fileEnd.Load()):
		return corruptf("bitmap %q: table (%d entries at %#x) lies beyond the end of the file", e.name, e.tableSize, e.tableOff)
	case uint64(e.tableSize) != want:
		return corruptf("bitmap %q: table has %d entries, the disk size needs %d", e.name, e.tableSize, want)
	}
	return nil
}

// readBitmapTable reads an entry's table, each entry checked.
func (img *Image) readBitmapTable(e bitmapEntry) ([]uint64, error) {
	raw := make([]byte, uint64(e.tableSize)*8)
	if err := img.readMeta(raw, int64(e.tableOff)); err != nil {
		return nil, fmt.Errorf("reading the table of bitmap %q: %w", e.name, err)
	}
	tbl := make([]uint64, e.tableSize)
	for i := range tbl {
		tbl[i] = binary.BigEndian.Uint64(raw[i*8:])
		if err := checkBitmapTableEntry(tbl[i], uint64(img.clusterSize), uint64(img.fileEnd.Load())); err != nil {
			return nil, corruptf("bitmap %q: %v", e.name, err)
		}
	}
	return tbl, nil
}

// loadBitmapData reads a consistent bitmap's data clusters into memory.
// Memory is bounded by the file: only clusters stored in it are held.
func (img *Image) loadBitmapData(b *dirtyBitmap) error {
	if b.loaded || b.tableOff == 0 {
		b.loaded = true
		return nil
	}
	tbl, err := img.readBitmapTable(b.bitmapEntry)
	if err != nil {
		return err
	}
	chunks := make([][]byte, len(tbl))
	for i, ent := range tbl {
		off := ent & bitmapTableOffsetMask
		switch {
		case off != 0:
			chunks[i] = make([]byte, img.clusterSize)
			if err := img.readMeta(chunks[i], int64(off)); err != nil {
				return fmt.Errorf("reading bitmap %q: %w", b.name, err)
			}
		case ent&bitmapTableAllOnes != 0:
			chunks[i] = onesChunk
		}
	}
	b.chunks, b.loaded = chunks, true
	b.clearBeyond(img.bitCount(b), uint64(img.clusterSize)*8)
	return nil
}

// bitCount is the number of granules of the virtual disk for b.
func (img *Image) bitCount(b *dirtyBitmap) uint64 {
	return (img.hdr.size + 1<<b.granBits - 1) >> b.granBits
}

// openBitmaps reads the bitmap directory at open. On a writable open the
// consistent bitmaps are loaded and all are marked in use on disk (see
// the comment at the top); a bad directory then fails the open, except
// for a repair, which must be able to open the image. Read-only opens
// keep the directory only, loading data when asked.
func (img *Image) openBitmaps(writable, repair bool) error {
	list, err := img.readBitmapDirectory()
	if err != nil {
		if writable && !repair {
			return fmt.Errorf("Could not read bitmaps: %w", err)
		}
		img.bitmapErr = err
		return nil
	}
	for _, e := range list {
		img.bitmaps = append(img.bitmaps, &dirtyBitmap{bitmapEntry: e, inconsistent: e.flags&bitmapFlagInUse != 0})
	}
	if !writable {
		return nil
	}
	if _, ok := img.bitmapsExtension(); !ok {
		// A stale extension (autoclear bit clear) is dropped.
		if img.dropBitmapsExtension() {
			return img.writeHeader()
		}
		return nil
	}
	img.bitmapsTracked = true
	img.bitmapsLive.Store(len(img.bitmaps) > 0)
	for _, b := range img.bitmaps {
		if b.inconsistent {
			continue
		}
		if err := img.loadBitmapData(b); err != nil {
			return err
		}
		b.flags |= bitmapFlagInUse
	}
	return img.rewriteBitmapDirectoryInPlace()
}

// dropBitmapsExtension removes the bitmaps extension from the header in
// memory; it reports whether there was one.
func (img *Image) dropBitmapsExtension() bool {
	h := img.hdr
	for i, e := range h.others {
		if e.typ == extBitmaps {
			h.others = append(h.others[:i:i], h.others[i+1:]...)
			h.autoclear &^= autoclearBitmaps
			return true
		}
	}
	return false
}

// rewriteBitmapDirectoryInPlace writes the directory over itself (its size
// unchanged: only flags differ). The autoclear bit is cleared around the
// write, so a torn directory is never trusted.
func (img *Image) rewriteBitmapDirectoryInPlace() error {
	raw, _ := img.bitmapsExtension()
	ext, err := parseBitmapExt(raw)
	if err != nil {
		return err
	}
	list := make([]bitmapEntry, len(img.bitmaps))
	for i, b := range img.bitmaps {
		list[i] = b.bitmapEntry
	}
	dir := encodeBitmapDir(list)
	if uint64(len(dir)) != ext.dirSize {
		return fmt.Errorf("bitmap directory changed size (%d to %d bytes)", ext.dirSize, len(dir))
	}
	img.hdr.autoclear &^= autoclearBitmaps
	if err := img.writeFeatures(); err != nil {
		return err
	}
	if err := img.writeMeta(dir, int64(ext.dirOff)); err != nil {
		return fmt.Errorf("writing bitmap directory: %w", err)
	}
	if err := img.sync(); err != nil {
		return err
	}
	img.hdr.autoclear |= autoclearBitmaps
	return img.writeFeatures()
}

// bitmapClusters lists the host clusters an entry's stored copy holds: the
// table, then its data clusters.
func (img *Image) bitmapClusters(e bitmapEntry) ([][2]int64, error) {
	if e.tableOff == 0 {
		return nil, nil
	}
	tbl, err := img.readBitmapTable(e)
	if err != nil {
		return nil, err
	}
	runs := [][2]int64{{int64(e.tableOff), img.clustersFor(int64(e.tableSize) * 8)}}
	for _, ent := range tbl {
		if off := int64(ent & bitmapTableOffsetMask); off != 0 {
			runs = append(runs, [2]int64{off, 1})
		}
	}
	return runs, nil
}

// clustersFor is the number of clusters n bytes occupy (at least one).
func (img *Image) clustersFor(n int64) int64 {
	return max(1, (n+img.clusterSize-1)>>img.clusterBits)
}

// writeNewMeta allocates clusters for p and writes it there.
func (img *Image) writeNewMeta(p []byte) (int64, error) {
	off, err := img.allocClusters(img.clustersFor(int64(len(p))))
	if err != nil {
		return 0, err
	}
	if err := img.writeMeta(p, off); err != nil {
		return 0, err
	}
	return off, nil
}

// storeBitmaps writes the bitmaps held in memory back to the image (see
// the comment at the top for the order). Caller holds mu.
func (img *Image) storeBitmaps() error {
	if !img.bitmapsTracked {
		return nil
	}
	img.bitmapsTracked = false
	var oldRuns [][2]int64
	for _, e := range img.removedBitmaps {
		runs, err := img.bitmapClusters(e)
		if err != nil {
			return err
		}
		oldRuns = append(oldRuns, runs...)
	}
	img.removedBitmaps = nil
	list := make([]bitmapEntry, 0, len(img.bitmaps))
	be := binary.BigEndian
	img.bitmaps = storeOrder(img.bitmaps)
	for _, b := range img.bitmaps {
		if b.inconsistent {
			list = append(list, b.bitmapEntry)
			continue
		}
		runs, err := img.bitmapClusters(b.bitmapEntry)
		if err != nil {
			return err
		}
		oldRuns = append(oldRuns, runs...)
		n := bitmapTableEntries(img.hdr.size, b.granBits, img.clusterBits)
		b.clearBeyond(img.bitCount(b), uint64(img.clusterSize)*8)
		tbl := make([]byte, n*8)
		for i := uint64(0); i < n; i++ {
			if i >= uint64(len(b.chunks)) || b.chunks[i] == nil || isZero(b.chunks[i]) {
				continue
			}
			off, err := img.writeNewMeta(chunkBytes(b.chunks[i], uint64(img.clusterSize)*8))
			if err != nil {
				return err
			}
			be.PutUint64(tbl[i*8:], uint64(off))
		}
		off, err := img.writeNewMeta(tbl)
		if err != nil {
			return err
		}
		b.tableOff, b.tableSize = uint64(off), uint32(n)
		b.flags &^= bitmapFlagInUse
		list = append(list, b.bitmapEntry)
	}
	oldExt, hadExt := img.bitmapsExtension()
	if len(list) > 0 {
		dir := encodeBitmapDir(list)
		if len(dir) > maxBitmapDirectorySize {
			return fmt.Errorf("bitmap directory would be %d bytes (at most %d)", len(dir), maxBitmapDirectorySize)
		}
		dirOff, err := img.writeNewMeta(dir)
		if err != nil {
			return err
		}
		// Tables, data and directory reach the disk before the header
		// names them; refcounts first (flushLocked orders them).
		if err := img.flushLocked(); err != nil {
			return err
		}
		ext := bitmapExt{count: uint32(len(list)), dirSize: uint64(len(dir)), dirOff: uint64(dirOff)}
		img.setBitmapsExtension(ext.encode())
	} else {
		img.dropBitmapsExtension()
	}
	if err := img.writeHeader(); err != nil {
		return err
	}
	if hadExt {
		if old, err := parseBitmapExt(oldExt); err == nil {
			oldRuns = append(oldRuns, [2]int64{int64(old.dirOff), img.clustersFor(int64(old.dirSize))})
		}
	}
	for _, r := range oldRuns {
		if err := img.freeClusters(r[0], r[1]); err != nil {
			return err
		}
	}
	return nil
}

// storeOrder is the directory order QEMU stores bitmaps in: the ones
// already on disk (stored or inconsistent) where they were, then the new
// ones newest first (QEMU appends them walking its in-memory list, which
// holds the newest first; iotest qemu-img-bitmaps).
func storeOrder(list []*dirtyBitmap) []*dirtyBitmap {
	var out, fresh []*dirtyBitmap
	for _, b := range list {
		if b.tableOff != 0 || b.inconsistent {
			out = append(out, b)
		} else {
			fresh = append(fresh, b)
		}
	}
	for i := len(fresh) - 1; i >= 0; i-- {
		out = append(out, fresh[i])
	}
	return out
}

// setBitmapsExtension replaces (or adds) the bitmaps extension and sets
// autoclear bit 0.
func (img *Image) setBitmapsExtension(data []byte) {
	h := img.hdr
	h.autoclear |= autoclearBitmaps
	h.hasBitmaps = true
	for i := range h.others {
		if h.others[i].typ == extBitmaps {
			h.others[i].data = data
			return
		}
	}
	h.others = append(h.others, rawExt{extBitmaps, data})
}

func isZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// scanBitmaps adds the references of the bitmap directory, the bitmap
// tables and their data clusters (in-use bitmaps included: their clusters
// stay allocated until the bitmap is stored or removed), so that check
// counts them and a repair never frees them.
func (s *refScan) scanBitmaps() {
	img := s.img
	raw, ok := img.bitmapsExtension()
	if !ok {
		return
	}
	ext, err := parseBitmapExt(raw)
	if err != nil {
		s.errorf(true, "%v", err)
		return
	}
	s.ref(int64(ext.dirOff), int64(ext.dirSize), "bitmap directory")
	list, err := img.readBitmapDirectory()
	if err != nil {
		s.errorf(true, "%v", err)
		return
	}
	for _, e := range list {
		runs, err := img.bitmapClusters(e)
		if err != nil {
			s.errorf(true, "%v", err)
			continue
		}
		for i, r := range runs {
			if i == 0 {
				s.ref(r[0], int64(e.tableSize)*8, "bitmap table")
			} else {
				s.ref(r[0], r[1]*img.clusterSize, "bitmap data cluster")
			}
		}
	}
}
