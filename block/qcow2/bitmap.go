package qcow2

import (
	"encoding/binary"
	"fmt"
)

// Persistent dirty bitmaps (header extension 0x23852875). The engine does
// not maintain bitmaps: a writable open clears autoclear bit 0 as the spec
// requires, which tells QEMU the bitmaps are stale. Check counts the
// clusters of consistent bitmaps (autoclear bit 0 set) so that images
// written by QEMU with bitmaps check clean, as qcow2_check_bitmaps_refcounts.

// Limits QEMU applies to the bitmaps extension (block/qcow2-bitmap.c), and
// the offset bits of a bitmap table entry (bits 9-55, as in L1 entries).
const (
	maxBitmaps             = 65535
	maxBitmapDirectorySize = 64 << 20
	bitmapTableOffsetMask  = 0x00fffffffffffe00
)

// scanBitmaps adds the references of the bitmap directory, the bitmap
// tables and their data clusters.
func (s *refScan) scanBitmaps() {
	img := s.img
	if img.hdr.autoclear&autoclearBitmaps == 0 {
		return
	}
	var ext []byte
	for _, e := range img.hdr.others {
		if e.typ == extBitmaps {
			ext = e.data
		}
	}
	if len(ext) < 24 {
		if ext != nil {
			s.errorf(true, "bitmaps extension is %d bytes, want 24", len(ext))
		}
		return
	}
	// The extension (QEMU's docs/interop/qcow2.txt, "Bitmaps extension"):
	// nb_bitmaps u32, reserved u32, bitmap_directory_size u64,
	// bitmap_directory_offset u64.
	be := binary.BigEndian
	nb := be.Uint32(ext[0:])
	dirSize := be.Uint64(ext[8:])
	dirOff := be.Uint64(ext[16:])
	cs := uint64(img.clusterSize)
	if nb > maxBitmaps || dirSize > maxBitmapDirectorySize || dirOff%cs != 0 || dirOff+dirSize > uint64(s.fileEnd) {
		s.errorf(true, "bitmap directory (%d bitmaps, %d bytes at %#x) is invalid", nb, dirSize, dirOff)
		return
	}
	s.ref(int64(dirOff), int64(dirSize), "bitmap directory")
	dir := make([]byte, dirSize)
	if err := img.readMeta(dir, int64(dirOff)); err != nil {
		s.errorf(false, "reading bitmap directory: %v", err)
		return
	}
	pos := uint64(0)
	for i := uint32(0); i < nb; i++ {
		if pos+24 > dirSize {
			s.errorf(true, "bitmap directory entry %d is truncated", i)
			return
		}
		// A directory entry ("Bitmap directory"): bitmap_table_offset
		// u64, bitmap_table_size u32 (entries), flags u32, type u8,
		// granularity_bits u8, name_size u16, extra_data_size u32, then
		// the extra data and the name, padded to 8 bytes.
		tblOff := be.Uint64(dir[pos:])
		tblSize := uint64(be.Uint32(dir[pos+8:]))
		nameLen := uint64(be.Uint16(dir[pos+18:]))
		extraLen := uint64(be.Uint32(dir[pos+20:]))
		pos += (24 + extraLen + nameLen + 7) &^ 7
		if tblOff%cs != 0 || tblOff+tblSize*8 > uint64(s.fileEnd) {
			s.errorf(true, "bitmap %d table at %#x (%d entries) is invalid", i, tblOff, tblSize)
			continue
		}
		s.ref(int64(tblOff), int64(tblSize*8), "bitmap table")
		tbl := make([]byte, tblSize*8)
		if err := img.readMeta(tbl, int64(tblOff)); err != nil {
			s.errorf(false, "reading bitmap table %d: %v", i, err)
			continue
		}
		for j := uint64(0); j < tblSize; j++ {
			ent := be.Uint64(tbl[j*8:])
			off := ent & bitmapTableOffsetMask
			if off == 0 {
				continue
			}
			if off%cs != 0 {
				s.errorf(true, "%s", fmt.Sprintf("bitmap %d data cluster %#x is not cluster aligned", i, off))
				continue
			}
			s.ref(int64(off), int64(cs), "bitmap data cluster")
		}
	}
}

// PersistentBitmaps counts the image's bitmaps; none when the autoclear
// bit says they are stale (another writer opened the image), as QEMU then
// ignores the extension.
func (img *Image) PersistentBitmaps() int {
	if img.hdr.autoclear&autoclearBitmaps == 0 {
		return 0
	}
	for _, e := range img.hdr.others {
		if e.typ == extBitmaps && len(e.data) >= 4 {
			return int(binary.BigEndian.Uint32(e.data))
		}
	}
	return 0
}
