package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// On-disk structures of persistent dirty bitmaps (QEMU's
// docs/interop/qcow2.txt, "Bitmaps extension", "Bitmap directory",
// "Bitmap table"), parsed and encoded without touching the image.

// Limits QEMU applies to the bitmaps extension and its directory entries.
const (
	maxBitmaps             = 65535
	maxBitmapDirectorySize = 64 << 20
	maxBitmapNameSize      = 1023
	minBitmapGranBits      = 9
	maxBitmapGranBits      = 31
	// QEMU's BME_MAX_TABLE_SIZE (entries) and BME_MAX_PHYS_SIZE (512 MiB
	// of bitmap data), which bounds the bits of a bitmap (one per granule
	// of the disk) to 2^32: a 2 TiB disk at 512-byte granularity (iotest
	// 190). Memory follows the dirty clusters, not this bound.
	maxBitmapTableEntries = 0x8000000
	maxBitmapBits         = 0x20000000 * 8
	bitmapEntryFixedSize  = 24
	bitmapTypeDirty       = 1
)

// Bitmap directory entry flags (spec "Bitmap directory", bytes 12-15).
const (
	bitmapFlagInUse         = 1 << 0 // not saved consistently: contents unknown
	bitmapFlagAuto          = 1 << 1 // enabled: tracks writes
	bitmapFlagExtraDataComp = 1 << 2 // unknown extra data may be ignored
	bitmapFlagsKnown        = bitmapFlagInUse | bitmapFlagAuto | bitmapFlagExtraDataComp
)

// bitmapTableOffsetMask selects a bitmap table entry's host cluster offset
// (bits 9-55); bit 0 of an entry without offset says the cluster reads as
// all ones. Bits 1-8 and 56-63 are reserved.
const (
	bitmapTableOffsetMask = 0x00fffffffffffe00
	bitmapTableAllOnes    = 1
	bitmapTableReserved   = 0xff000000000001fe
)

// bitmapExt is the 24-byte bitmaps header extension: nb_bitmaps u32,
// reserved u32 (zero), bitmap_directory_size u64, bitmap_directory_offset
// u64.
type bitmapExt struct {
	count   uint32
	dirSize uint64
	dirOff  uint64
}

func parseBitmapExt(b []byte) (bitmapExt, error) {
	if len(b) != 24 {
		return bitmapExt{}, corruptf("bitmaps extension is %d bytes, want 24", len(b))
	}
	be := binary.BigEndian
	e := bitmapExt{count: be.Uint32(b), dirSize: be.Uint64(b[8:]), dirOff: be.Uint64(b[16:])}
	switch {
	case be.Uint32(b[4:]) != 0:
		return e, corruptf("bitmaps extension: reserved field is not zero")
	case e.count == 0 || e.count > maxBitmaps:
		return e, corruptf("bitmaps extension: %d bitmaps (1 to %d allowed)", e.count, maxBitmaps)
	case e.dirSize == 0 || e.dirSize > maxBitmapDirectorySize:
		return e, corruptf("bitmaps extension: directory of %d bytes (at most %d)", e.dirSize, maxBitmapDirectorySize)
	}
	return e, nil
}

func (e bitmapExt) encode() []byte {
	b := make([]byte, 24)
	be := binary.BigEndian
	be.PutUint32(b, e.count)
	be.PutUint64(b[8:], e.dirSize)
	be.PutUint64(b[16:], e.dirOff)
	return b
}

// bitmapEntry is one bitmap directory entry: bitmap_table_offset u64,
// bitmap_table_size u32 (entries), flags u32, type u8, granularity_bits
// u8, name_size u16, extra_data_size u32, then the extra data and the
// name, the whole padded to a multiple of 8 bytes.
type bitmapEntry struct {
	tableOff  uint64
	tableSize uint32
	flags     uint32
	granBits  uint8
	name      string
	extra     []byte
}

// parseBitmapDir decodes exactly count entries filling dir (no trailing
// bytes, as QEMU's bitmap_list_load). Each entry is checked on its own
// (checkEntry needs the image for the table's placement).
func parseBitmapDir(dir []byte, count uint32) ([]bitmapEntry, error) {
	be := binary.BigEndian
	var list []bitmapEntry
	seen := map[string]bool{}
	pos := 0
	for i := uint32(0); i < count; i++ {
		if len(dir)-pos < bitmapEntryFixedSize {
			return nil, corruptf("bitmap directory entry %d is truncated", i)
		}
		d := dir[pos:]
		e := bitmapEntry{
			tableOff:  be.Uint64(d),
			tableSize: be.Uint32(d[8:]),
			flags:     be.Uint32(d[12:]),
			granBits:  d[17],
		}
		typ := d[16]
		nameLen := int(be.Uint16(d[18:]))
		extraLen := int64(be.Uint32(d[20:]))
		size := (bitmapEntryFixedSize + extraLen + int64(nameLen) + 7) &^ 7
		if size > int64(len(d)) {
			return nil, corruptf("bitmap directory entry %d (%d bytes) runs past the directory", i, size)
		}
		e.extra = append([]byte(nil), d[bitmapEntryFixedSize:bitmapEntryFixedSize+extraLen]...)
		e.name = string(d[bitmapEntryFixedSize+extraLen : bitmapEntryFixedSize+extraLen+int64(nameLen)])
		switch {
		case typ != bitmapTypeDirty:
			return nil, corruptf("bitmap %q has unknown type %d", e.name, typ)
		case nameLen == 0 || nameLen > maxBitmapNameSize:
			return nil, corruptf("bitmap directory entry %d: name of %d bytes", i, nameLen)
		case e.flags&^bitmapFlagsKnown != 0:
			return nil, corruptf("bitmap %q has reserved flags %#x", e.name, e.flags&^bitmapFlagsKnown)
		case extraLen != 0 && e.flags&bitmapFlagExtraDataComp == 0:
			return nil, corruptf("bitmap %q has extra data QEMU does not know", e.name)
		case e.granBits < minBitmapGranBits || e.granBits > maxBitmapGranBits:
			return nil, corruptf("bitmap %q has granularity 2^%d (2^%d to 2^%d allowed)", e.name, e.granBits, minBitmapGranBits, maxBitmapGranBits)
		case e.tableSize > maxBitmapTableEntries:
			return nil, corruptf("bitmap %q has a table of %d entries", e.name, e.tableSize)
		case seen[e.name]:
			return nil, corruptf("bitmap %q appears twice in the directory", e.name)
		}
		for _, c := range d[bitmapEntryFixedSize+extraLen+int64(nameLen) : size] {
			if c != 0 {
				return nil, corruptf("bitmap %q: directory entry padding is not zero", e.name)
			}
		}
		seen[e.name] = true
		list = append(list, e)
		pos += int(size)
	}
	if pos != len(dir) {
		return nil, corruptf("bitmap directory has %d bytes after its %d entries", len(dir)-pos, count)
	}
	return list, nil
}

// encodedSize is the entry's size in the directory, padding included.
func (e *bitmapEntry) encodedSize() int {
	return (bitmapEntryFixedSize + len(e.extra) + len(e.name) + 7) &^ 7
}

// encodeBitmapDir lays the entries out as parseBitmapDir reads them.
func encodeBitmapDir(list []bitmapEntry) []byte {
	n := 0
	for i := range list {
		n += list[i].encodedSize()
	}
	dir := make([]byte, n)
	be := binary.BigEndian
	pos := 0
	for i := range list {
		e := &list[i]
		d := dir[pos:]
		be.PutUint64(d, e.tableOff)
		be.PutUint32(d[8:], e.tableSize)
		be.PutUint32(d[12:], e.flags)
		d[16] = bitmapTypeDirty
		d[17] = e.granBits
		be.PutUint16(d[18:], uint16(len(e.name)))
		be.PutUint32(d[20:], uint32(len(e.extra)))
		copy(d[bitmapEntryFixedSize:], e.extra)
		copy(d[bitmapEntryFixedSize+len(e.extra):], e.name)
		pos += e.encodedSize()
	}
	return dir
}

// bitmapTableEntries is the number of bitmap table entries (data
// clusters) a bitmap of the given granularity needs for a disk of size
// bytes: one bit per granule, cluster_size*8 bits per cluster.
func bitmapTableEntries(size uint64, granBits uint8, clusterBits uint32) uint64 {
	bits := (size + 1<<granBits - 1) >> granBits
	perCluster := uint64(8) << clusterBits
	return (bits + perCluster - 1) / perCluster
}

// bitmapTooLarge says a bitmap of this granularity cannot cover a disk
// of size bytes (QEMU's check_constraints_on_bitmap).
func bitmapTooLarge(size uint64, granBits uint8) bool {
	return size > maxBitmapBits<<granBits
}

// errBitmapTooLarge is QEMU's refusal of such a bitmap.
var errBitmapTooLarge = errors.New("Too much space will be occupied by the bitmap. Use larger granularity")

// checkBitmapTableEntry validates one table entry against the image: a
// data cluster must be aligned and inside the file, reserved bits zero.
func checkBitmapTableEntry(ent uint64, cs uint64, fileEnd uint64) error {
	off := ent & bitmapTableOffsetMask
	switch {
	case ent&bitmapTableReserved != 0:
		return fmt.Errorf("reserved bits set in bitmap table entry %#x", ent)
	case off != 0 && ent&bitmapTableAllOnes != 0:
		return fmt.Errorf("bitmap table entry %#x has both an offset and the all-ones bit", ent)
	case off%cs != 0:
		return fmt.Errorf("bitmap data cluster %#x is not cluster aligned", off)
	case off != 0 && off+cs > fileEnd:
		return fmt.Errorf("bitmap data cluster %#x lies beyond the end of the file", off)
	}
	return nil
}
