package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/luks"
)

// Measure answers `qemu-img measure -O qcow2`: the file size a new qcow2
// image needs. "fully allocated" is the metadata of a preallocated image
// (header, L1, L2 and refcount structures for every cluster) plus the whole
// virtual size; "required" is the same metadata plus only the clusters that
// hold data: with an input image, those its chain holds data in; with a
// backing file (-o backing_file) every cluster, since the new image's
// backing file may share nothing with the input; with falloc or full
// preallocation every cluster too. Metadata is always counted in full, so
// "required" over-estimates, as QEMU's does.
//
// The options are checked as qemu-img measure checks them, which is less
// than create does (compat takes only "0.10" and "1.1"; lazy_refcounts or
// extended_l2 on a version 2 image pass).
func Measure(o block.CreateOptions, in block.Image) (block.MeasureInfo, error) {
	var info block.MeasureInfo
	version := 3
	switch o.Compat {
	case "", "1.1":
	case "0.10":
		version = 2
	default:
		return info, fmt.Errorf("Invalid compatibility level: '%s'", o.Compat)
	}
	cs := o.ClusterSize
	if cs == 0 {
		cs = defaultClusterSize
	}
	if cs < 1<<minClusterBits || cs > 1<<maxClusterBits || cs&(cs-1) != 0 {
		return info, errors.New("Cluster size must be a power of two between 512 and 2048k")
	}
	if o.ExtendedL2 && cs < 16<<10 {
		return info, errors.New("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
	}
	rb := o.RefcountBits
	if rb == 0 {
		rb = defaultRefcountBits
	}
	if rb < 1 || rb > 64 || rb&(rb-1) != 0 {
		return info, errors.New("Refcount width must be a power of two and may not exceed 64 bits")
	}
	if version == 2 && rb != 16 {
		return info, errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	switch o.Preallocation {
	case "", "off", "metadata", "falloc", "full":
	default:
		return info, fmt.Errorf("invalid parameter value: %s", o.Preallocation)
	}
	// A LUKS header area takes whole clusters before any data
	// (qcow2_measure's luks_payload_size).
	var luksBytes uint64
	if o.Extra["encrypt.format"] == "luks" {
		lo, _, err := luks.OptionsFrom(o.Extra, "encrypt.", o.Secrets)
		if err != nil {
			return info, err
		}
		n, err := luks.HeaderAreaBytes(lo)
		if err != nil {
			return info, err
		}
		luksBytes = roundUp64(uint64(n), uint64(cs))
	}
	ucs := uint64(cs)
	size := uint64(o.Size)
	if in != nil {
		size = uint64(in.Size())
	}
	virtual := roundUp64(size, ucs)
	if virtual < size {
		return info, errTooLarge
	}
	l2Entry := uint64(8)
	if o.ExtendedL2 {
		l2Entry = 16
	}
	// qcow2_measure refuses a size whose L1 table would pass QEMU's 32 MiB
	// limit (maxL1Bytes).
	l2Tables := divRoundUp64(virtual/ucs, ucs/l2Entry)
	if l2Tables > maxL1Bytes/8 {
		return info, errTooLarge
	}
	data := virtual
	switch {
	case o.Preallocation == "falloc" || o.Preallocation == "full":
	case in != nil && o.BackingFile == "":
		n, err := dataClusterBytes(in, cs)
		if err != nil {
			return info, err
		}
		data = uint64(n)
	case in == nil:
		data = 0
	}
	full := preallocatedSize(virtual, ucs, uint(bits.TrailingZeros(uint(rb))), l2Entry)
	if full < virtual || full > 1<<63-1 {
		return info, errTooLarge
	}
	info.FullyAllocated = int64(full + luksBytes)
	info.Required = int64(full - virtual + data + luksBytes)
	if src, ok := in.(*Image); ok && version >= 3 && src.hdr.version >= 3 {
		info.HasBitmaps = true
		b, err := src.bitmapsSize(cs)
		if err != nil {
			return info, err
		}
		info.Bitmaps = b
	}
	return info, nil
}

var errTooLarge = errors.New("The image size is too large (try using a larger cluster size)")

// Rounding helpers; align is a power of two.
func roundUp64(n, align uint64) uint64  { return (n + align - 1) &^ (align - 1) }
func divRoundUp64(n, d uint64) uint64   { return n/d + min(n%d, 1) }
func roundDown64(n, align int64) int64  { return n &^ (align - 1) }
func roundUpInt64(n, align int64) int64 { return (n + align - 1) &^ (align - 1) }

// preallocatedSize is the file size of an image of virtual bytes (a
// multiple of cs) with every cluster allocated: one header cluster, the L2
// tables mapping every cluster, the L1 table (whole clusters) pointing at
// them, and the refcount blocks and table counting all of those clusters
// and themselves.
func preallocatedSize(virtual, cs uint64, refcountOrder uint, l2Entry uint64) uint64 {
	meta := cs
	// L2 entries come in whole tables.
	l2Entries := roundUp64(virtual/cs, cs/l2Entry)
	meta += l2Entries * l2Entry
	// One L1 entry per L2 table, the table padded to whole clusters.
	l1Entries := roundUp64(l2Entries*l2Entry/cs, cs/8)
	meta += l1Entries * 8
	meta += refcountMetadataBytes((meta+virtual)/cs, cs, refcountOrder)
	return meta + virtual
}

// refcountMetadataBytes is the size of the refcount blocks and table that
// count clusters data clusters plus themselves: the least fixed point of
// "blocks cover data, blocks and table; the table covers the blocks",
// found by iterating from nothing (each step only grows).
func refcountMetadataBytes(clusters, cs uint64, refcountOrder uint) uint64 {
	perBlock := cs * 8 >> refcountOrder
	perTable := cs / 8
	var blocks, table uint64
	for {
		b := divRoundUp64(clusters+blocks+table, perBlock)
		t := divRoundUp64(b, perTable)
		if b == blocks && t == table {
			return (blocks + table) * cs
		}
		blocks, table = b, t
	}
}

// dataClusterBytes adds up the clusters (of size cs) of in's virtual disk
// that hold data anywhere in its chain, as QEMU's qcow2_measure walks block
// status: an extent reading as zeroes counts nothing; a data extent counts
// from the start of its first cluster to the end of its last, and the walk
// resumes at that end (so two data extents within one cluster separated by
// zeroes both count it, as in QEMU).
func dataClusterBytes(in block.Image, cs int64) (int64, error) {
	size := in.Size()
	var total int64
	for off := int64(0); off < size; {
		e, err := in.BlockStatus(off, size-off)
		if err != nil {
			return 0, err
		}
		if e.Length <= 0 {
			return 0, fmt.Errorf("block status at %d returned an empty extent", off)
		}
		if e.Flags&block.ExtentZero == 0 && e.Flags&block.ExtentData != 0 {
			end := roundUpInt64(off+e.Length, cs)
			total += end - roundDown64(off, cs)
			off = end
			continue
		}
		off += e.Length
	}
	return total, nil
}

// bitmapsSize is the room the image's persistent dirty bitmaps would take
// in a new image with clusters of cs bytes, as qemu-img measure's "bitmaps
// size": none when the autoclear bit says they are stale (QEMU then
// ignores the extension).
func (img *Image) bitmapsSize(cs int64) (int64, error) {
	if img.hdr.autoclear&autoclearBitmaps == 0 {
		return 0, nil
	}
	var ext []byte
	for _, e := range img.hdr.others {
		if e.typ == extBitmaps {
			ext = e.data
		}
	}
	if len(ext) < 24 {
		return 0, nil
	}
	// The extension (docs/interop/qcow2.txt, "Bitmaps extension"):
	// nb_bitmaps u32, reserved u32, bitmap_directory_size u64,
	// bitmap_directory_offset u64.
	be := binary.BigEndian
	nb := be.Uint32(ext[0:])
	dirSize := be.Uint64(ext[8:])
	dirOff := be.Uint64(ext[16:])
	if nb > maxBitmaps || dirSize > maxBitmapDirectorySize || dirOff > 1<<62 {
		return 0, corruptf("bitmap directory (%d bitmaps, %d bytes at %#x) is invalid", nb, dirSize, dirOff)
	}
	dir := make([]byte, dirSize)
	if err := img.readMeta(dir, int64(dirOff)); err != nil {
		return 0, err
	}
	return bitmapDirectoryMeasure(dir, nb, img.Size(), cs)
}

// bitmapDirectoryMeasure sizes the nb bitmaps of directory dir for a disk
// of diskSize bytes in clusters of cs bytes: each bitmap's data clusters
// (one bit per granule, all assumed allocated) and its bitmap table, whole
// clusters each, then the new directory (entries without extra data)
// rounded up to whole clusters, as QEMU's measure counts them.
func bitmapDirectoryMeasure(dir []byte, nb uint32, diskSize, cs int64) (int64, error) {
	be := binary.BigEndian
	ucs := uint64(cs)
	var total, newDir uint64
	pos := uint64(0)
	for i := uint32(0); i < nb; i++ {
		// A directory entry (docs/interop/qcow2.txt, "Bitmap
		// directory"): table offset u64, table size u32, flags u32,
		// type u8, granularity_bits u8, name_size u16, extra_data_size
		// u32, then extra data and name, padded to 8 bytes.
		if pos+24 > uint64(len(dir)) {
			return 0, corruptf("bitmap directory entry %d is truncated", i)
		}
		granBits := uint(dir[pos+17])
		nameLen := uint64(be.Uint16(dir[pos+18:]))
		extraLen := uint64(be.Uint32(dir[pos+20:]))
		if granBits < 9 || granBits > 31 {
			return 0, corruptf("bitmap %d has granularity 2^%d, outside 2^9..2^31", i, granBits)
		}
		pos += roundUp64(24+extraLen+nameLen, 8)
		if pos > uint64(len(dir)) {
			return 0, corruptf("bitmap directory entry %d is truncated", i)
		}
		bytes := divRoundUp64(divRoundUp64(uint64(diskSize), 1<<granBits), 8)
		clusters := divRoundUp64(bytes, ucs)
		total += clusters*ucs + roundUp64(clusters*8, ucs)
		newDir += roundUp64(24+nameLen, 8)
		// Each bitmap adds at most about 2^52 bytes (a 2^63-byte disk
		// at 512-byte granules); stop before a sum could wrap.
		if total > 1<<62 {
			return 0, corruptf("bitmaps of %d bytes are beyond any image", total)
		}
	}
	return int64(total + roundUp64(newDir, ucs)), nil
}
