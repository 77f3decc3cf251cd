// Package qcow2 is Petrel's native qcow2 engine (the qcow2 spec, QEMU
// docs/specs/qcow2.txt, with QEMU's current docs/interop/qcow2.txt and
// behaviour for what came later: extended L2, zstd, bitmaps, external data
// files).
//
// Files by responsibility, as QEMU splits qcow2.c: header.go (header and
// extensions), cache.go (bounded metadata cache), refcount.go (refcounts and
// cluster allocation), cluster.go (L1/L2 mapping, extended L2 subclusters),
// image.go (open, flush, close, read), write.go (in-place and allocating
// writes, copy-on-write), subcluster.go (extended L2 partial writes),
// api.go (the exported mutators: each refuses read-only and corrupt-marked
// images and marks the image corrupt when its change finds corruption),
// corruption.go (the corrupt mark), zero.go (discard, zeroes, block status,
// make-empty), compress.go, snapshot.go (create, apply, delete, load for
// convert -l), snaptable.go (the snapshot table: parse, encode, write),
// check.go (check and refcount rebuild, snapshot table repair), bitmap.go
// (bitmap references for check, the bitmap count), create.go, resize.go,
// info.go (describe for qemu-img info, the backing name for rebase -u).
//
// Crash consistency comes from write order: a new cluster's refcount is
// in the refcount cache, its data is written, then its L2 entry is set;
// dirty L2 tables are only written after the refcount blocks (with an
// fsync barrier unless lazy refcounts), L2 tables before L1 entries, and
// clusters are released only after the entry that dropped them is on disk.
// Snapshot operations follow QEMU's rule that a copied flag may be missing
// but never wrong (see createSnapshot): a crash leaves leaks and missing
// flags at worst.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Magic is the first four bytes of every qcow2 file.
const Magic = "QFI\xfb"

// Header extension types (spec "Header"; the bitmaps, external data file
// and crypto types are from QEMU's current docs/interop/qcow2.txt). Each
// extension is type, length, data padded to 8 bytes, big-endian.
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xE2792ACA
	extFeatureTable  = 0x6803f857
	extBitmaps       = 0x23852875
	extDataFile      = 0x44415441
	extCrypto        = 0x0537be77
)

// Incompatible feature bits (header bytes 72-79): an image with a bit set
// that is not in incompatKnown must not be opened (spec "Header"). Dirty
// means refcounts may be stale (lazy refcounts); corrupt is set by an
// implementation that found corruption; the others are later formats'.
const (
	incompatDirty      = 1 << 0
	incompatCorrupt    = 1 << 1
	incompatDataFile   = 1 << 2
	incompatCompressed = 1 << 3
	incompatExtendedL2 = 1 << 4
	incompatKnown      = incompatDirty | incompatCorrupt | incompatDataFile | incompatCompressed | incompatExtendedL2
)

// Compatible and autoclear feature bits (header bytes 80-95). Unknown
// compatible bits are ignored; autoclear bits must be cleared by a writer
// that does not maintain what they describe. Petrel keeps both bits it
// knows: it keeps bitmaps in sync (bitmap.go), and every write keeps a raw
// external data file a standalone raw image (datafile.go).
const (
	compatLazyRefcounts = 1 << 0
	autoclearBitmaps    = 1 << 0
	autoclearDataRaw    = 1 << 1
	autoclearKnown      = autoclearBitmaps | autoclearDataRaw
)

// Compression types (header byte 104).
const (
	compressionZlib = 0
	compressionZstd = 1
)

// Limits QEMU applies before trusting header fields (block/qcow2.h), in
// bytes unless named otherwise: cluster_bits 9 (spec minimum) to 21 (QEMU's
// 2 MiB implementation limit); the snapshot table bounded as a whole and
// per entry's extra data; the header lengths of version 2 (fixed), the
// smallest version 3 header, and the 112 bytes QEMU writes (through
// compression_type and its padding).
const (
	minClusterBits     = 9
	maxClusterBits     = 21
	maxL1Bytes         = 32 << 20
	maxRefcountTable   = 8 << 20
	maxSnapshots       = 65536
	maxBackingNameLen  = 1023
	maxSnapshotTable   = 64 << 20 // QCOW_MAX_SNAPSHOTS_SIZE (sum of entries)
	maxSnapshotExtra   = 1024
	v2HeaderLen        = 72
	v3MinHeaderLen     = 104
	v3HeaderLenWritten = 112
)

// featureName is one entry of the feature name table extension (spec
// "Feature name table"): 48 bytes on disk, the type, the bit number, and a
// 46-byte name padded with NULs.
type featureName struct {
	kind uint8 // 0 incompatible, 1 compatible, 2 autoclear
	bit  uint8
	name string
}

// rawExt is a header extension kept verbatim to be written back: typ is
// the extension type, data its payload without the padding.
type rawExt struct {
	typ  uint32
	data []byte
}

// header is the parsed first cluster of the image. The first group of
// fields mirrors the on-disk header (spec "Header", big-endian): offsets in
// bytes into the image file, l1Size in entries, rtClusters in clusters,
// size the virtual disk size in bytes, refcountOrder log2 of the refcount
// width in bits (4 for version 2), headerLen the header's length in bytes
// (72 for version 2), compressionType header byte 104 (0 zlib, 1 zstd).
// The rest comes from the extensions and the backing name: backingFile,
// backingFormat (extension 0xE2792ACA), dataFile (extension 0x44415441,
// the external data file's name, used when incompatible bit 2 is set),
// features (the image's own feature name table, for messages), and
// hasBitmaps (a bitmaps extension is present; it is kept in others).
type header struct {
	version         uint32
	backingOff      uint64
	backingLen      uint32
	clusterBits     uint32
	size            uint64
	cryptMethod     uint32
	l1Size          uint32
	l1Off           uint64
	rtOff           uint64
	rtClusters      uint32
	nbSnapshots     uint32
	snapOff         uint64
	incompat        uint64
	compat          uint64
	autoclear       uint64
	refcountOrder   uint32
	headerLen       uint32
	compressionType uint8

	backingFile   string
	backingFormat string
	// cryptoOff and cryptoLen locate the LUKS header area (extension
	// 0x0537be77, spec "Full disk encryption header pointer").
	cryptoOff, cryptoLen uint64
	dataFile             string
	features             []featureName
	hasBitmaps           bool
	others               []rawExt // unknown extensions, preserved in order
}

// ErrCorrupt wraps every complaint about image metadata.
var ErrCorrupt = errors.New("qcow2 image is corrupt")

// corruptf formats an ErrCorrupt error; every finding about bad metadata
// goes through it so callers (check, the corrupt mark) can tell it from an
// I/O error with errors.Is.
func corruptf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// parseHeader decodes and bounds-checks the header in the first cluster
// (buf holds at least the first min(file, 2 MiB) bytes). fileSize bounds
// every offset.
//
// Nothing a file says is trusted before it is checked: the version and
// cluster size first (everything else is in their units), then the
// version 3 fields, the extensions and features, the backing name (inside
// the header cluster, at most 1023 bytes), and the tables' placement as
// QEMU's qcow2_validate_table does (cluster aligned, inside the file, not
// over the header), with QEMU's size limits on the L1 and refcount tables
// and on the snapshot count, so that no later allocation is sized by an
// unchecked field.
func parseHeader(buf []byte, fileSize int64) (*header, error) {
	if len(buf) < v2HeaderLen || string(buf[:4]) != Magic {
		return nil, errors.New("Image is not in qcow2 format") // qcow2_do_open's words
	}
	be := binary.BigEndian
	h := &header{
		version:     be.Uint32(buf[4:]),
		backingOff:  be.Uint64(buf[8:]),
		backingLen:  be.Uint32(buf[16:]),
		clusterBits: be.Uint32(buf[20:]),
		size:        be.Uint64(buf[24:]),
		cryptMethod: be.Uint32(buf[32:]),
		l1Size:      be.Uint32(buf[36:]),
		l1Off:       be.Uint64(buf[40:]),
		rtOff:       be.Uint64(buf[48:]),
		rtClusters:  be.Uint32(buf[56:]),
		nbSnapshots: be.Uint32(buf[60:]),
		snapOff:     be.Uint64(buf[64:]),
	}
	if h.version != 2 && h.version != 3 {
		return nil, fmt.Errorf("unsupported qcow2 version %d", h.version)
	}
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return nil, fmt.Errorf("unsupported cluster size: 2^%d (must be 2^%d..2^%d)", h.clusterBits, minClusterBits, maxClusterBits)
	}
	cs := uint64(1) << h.clusterBits
	h.refcountOrder = 4
	h.headerLen = v2HeaderLen
	if h.version >= 3 {
		if len(buf) < v3MinHeaderLen {
			return nil, corruptf("truncated version 3 header")
		}
		h.incompat = be.Uint64(buf[72:])
		h.compat = be.Uint64(buf[80:])
		h.autoclear = be.Uint64(buf[88:])
		h.refcountOrder = be.Uint32(buf[96:])
		h.headerLen = be.Uint32(buf[100:])
		if h.headerLen < v3MinHeaderLen {
			return nil, corruptf("header_length %d is smaller than %d", h.headerLen, v3MinHeaderLen)
		}
		if uint64(h.headerLen) > cs || int(h.headerLen) > len(buf) {
			return nil, corruptf("header_length %d exceeds the cluster size", h.headerLen)
		}
		if h.headerLen > 104 {
			h.compressionType = buf[104]
		}
	}
	if h.refcountOrder > 6 {
		return nil, corruptf("refcount_order %d is larger than 6", h.refcountOrder)
	}
	if err := h.parseExtensions(buf[:min(uint64(len(buf)), cs)]); err != nil {
		return nil, err
	}
	if err := h.checkFeatures(); err != nil {
		return nil, err
	}
	if err := h.checkCrypto(cs, fileSize); err != nil {
		return nil, err
	}
	if h.backingOff != 0 {
		if h.backingLen > maxBackingNameLen {
			return nil, corruptf("backing file name is too long (%d bytes, limit %d)", h.backingLen, maxBackingNameLen)
		}
		end := h.backingOff + uint64(h.backingLen)
		if end < h.backingOff || end > cs || end > uint64(len(buf)) {
			return nil, corruptf("backing file name at %#x+%d lies outside the header cluster", h.backingOff, h.backingLen)
		}
		h.backingFile = string(buf[h.backingOff:end])
	}
	// The L1 table's size, then its placement, in qcow2_do_open's order
	// and words (iotests 054, 080: qemu-img prints these as they are).
	if uint64(h.l1Size)*8 > maxL1Bytes {
		return nil, errors.New("Active L1 table too large")
	}
	if need := l1EntriesFor(h.size, h.clusterBits, h.l2EntryBits()); need > math.MaxInt32 {
		// QEMU keeps the L1 index of the VM state in an int.
		return nil, errors.New("Image is too big")
	} else if h.l1Size < need {
		return nil, errors.New("L1 table is too small")
	}
	// Table placement (qcow2_validate_table in QEMU).
	if err := validateTable(h.l1Off, uint64(h.l1Size)*8, cs, fileSize, "active L1 table"); err != nil {
		return nil, err
	}
	if h.rtClusters == 0 || uint64(h.rtClusters)*cs > maxRefcountTable {
		return nil, corruptf("refcount table size %d clusters is out of range", h.rtClusters)
	}
	if err := validateTable(h.rtOff, uint64(h.rtClusters)*cs, cs, fileSize, "refcount table"); err != nil {
		return nil, err
	}
	if h.nbSnapshots > maxSnapshots {
		return nil, corruptf("too many snapshots (%d, limit %d)", h.nbSnapshots, maxSnapshots)
	}
	if h.nbSnapshots > 0 {
		if err := validateTable(h.snapOff, uint64(h.nbSnapshots)*40, cs, fileSize, "snapshot table"); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// validateTable checks that a table is cluster aligned and inside the file
// (offsets must be cluster aligned, spec "Header"); size is the table's
// length in bytes. A table at offset 0 would overlap the header.
func validateTable(off, size, cs uint64, fileSize int64, what string) error {
	if off%cs != 0 {
		return corruptf("%s offset %#x is not cluster aligned", what, off)
	}
	if off == 0 && size > 0 {
		return corruptf("%s at offset 0 overlaps the header", what)
	}
	if off+size < off || off+size > uint64(fileSize) {
		return corruptf("%s at %#x+%#x lies beyond the end of the file (%d bytes)", what, off, size, fileSize)
	}
	return nil
}

// l1EntriesFor is the number of L1 entries a virtual size needs: one per
// L2 table's worth of guest space, 2^(cluster_bits + cluster_bits -
// l2EntryBits) bytes (spec "Cluster mapping"), saturating at 2^32-1.
func l1EntriesFor(size uint64, clusterBits, l2EntryBits uint32) uint32 {
	shift := clusterBits + (clusterBits - l2EntryBits)
	n := size >> shift
	if size&(uint64(1)<<shift-1) != 0 {
		n++
	}
	if n > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(n)
}

// l2EntryBits is log2 of the size of one L2 entry (8 bytes, 16 with extended L2).
// An L2 table is one cluster, so it holds cluster_size >> l2EntryBits
// entries.
func (h *header) l2EntryBits() uint32 {
	if h.incompat&incompatExtendedL2 != 0 {
		return 4
	}
	return 3
}

// parseExtensions reads the extensions after the fixed header, up to the
// end marker, the backing file name (which must come after them) or the
// end of buf. Each type may appear once (the feature table is tolerated
// twice, as QEMU does), and an extension running past the area is
// corruption. Unknown types are kept in others, in order, to be written
// back: the spec lets an implementation ignore them, not drop them.
func (h *header) parseExtensions(buf []byte) error {
	be := binary.BigEndian
	off := uint64(h.headerLen)
	end := uint64(len(buf))
	if h.backingOff != 0 && h.backingOff < end && h.backingOff >= off {
		end = h.backingOff
	}
	seen := map[uint32]bool{}
	for off+8 <= end {
		typ := be.Uint32(buf[off:])
		n := uint64(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd {
			return nil
		}
		if n > end-off {
			return corruptf("header extension %#x (length %d) goes beyond the header cluster", typ, n)
		}
		data := buf[off : off+n]
		off += (n + 7) &^ 7
		// QEMU takes the last of a repeated feature table or backing
		// format (iotest 114 appends a second backing format).
		if typ != extFeatureTable && typ != extBackingFormat && seen[typ] {
			return corruptf("header extension %#x appears twice", typ)
		}
		seen[typ] = true
		switch typ {
		case extBackingFormat:
			if n > 1023 {
				return corruptf("backing format name too long")
			}
			h.backingFormat = string(data)
		case extFeatureTable:
			// As QEMU: the extension is read into a zeroed buffer of
			// 48-byte entries, so a short last entry counts with its
			// tail zeroed (iotest 036 adds one of 14 bytes), and the
			// table ends at the first entry without a name.
			table := append(append([]byte(nil), data...), make([]byte, 48)...)
			h.features = nil
			for i := 0; i < len(data); i += 48 {
				name := table[i+2 : i+48]
				if j := bytes.IndexByte(name, 0); j >= 0 {
					name = name[:j]
				}
				if len(name) == 0 {
					break
				}
				h.features = append(h.features, featureName{table[i], table[i+1], string(name)})
			}
		case extDataFile:
			h.dataFile = string(data)
		case extCrypto:
			if n != 16 {
				return corruptf("encryption header extension has length %d, not 16", n)
			}
			h.cryptoOff, h.cryptoLen = be.Uint64(data), be.Uint64(data[8:])
		case extBitmaps:
			h.hasBitmaps = true
			h.others = append(h.others, rawExt{typ, append([]byte(nil), data...)})
		default:
			h.others = append(h.others, rawExt{typ, append([]byte(nil), data...)})
		}
	}
	return nil
}

// unsupportedFeatures is QEMU's report_unsupported_feature: the names of
// the image's own feature table for the incompatible bits in mask, in the
// table's order, then the bits left unnamed as one hex mask (iotest 036).
func (h *header) unsupportedFeatures(mask uint64) error {
	var names []string
	for _, f := range h.features {
		if f.kind == 0 && f.bit < 64 && mask&(1<<f.bit) != 0 {
			names = append(names, f.name)
			mask &^= 1 << f.bit
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("Unknown incompatible feature: %x", mask))
	}
	return fmt.Errorf("Unsupported qcow2 feature(s): %s", strings.Join(names, ", "))
}

// checkFeatures refuses images with features this engine cannot honour:
// unknown incompatible bits (spec "Header": an implementation must fail to
// open them; the message lists them as QEMU does), the raw external data
// bit without an external data file (QEMU's words), and inconsistent
// compression type or extended L2 settings (extended L2 needs clusters of
// at least 16 KiB, so that 32 subclusters are 512 bytes or more).
func (h *header) checkFeatures() error {
	if unknown := h.incompat &^ incompatKnown; unknown != 0 {
		return h.unsupportedFeatures(unknown)
	}
	if h.autoclear&autoclearDataRaw != 0 && h.incompat&incompatDataFile == 0 {
		return errors.New("data-file-raw requires a data file")
	}
	// QEMU's validate_compression_type: a header too short for the
	// field means zlib, and the feature bit must be set exactly when the
	// type is not zlib (iotest 287).
	switch {
	case h.compressionType != compressionZlib && h.compressionType != compressionZstd:
		return fmt.Errorf("qcow2: unknown compression type: %d", h.compressionType)
	case h.compressionType == compressionZlib && h.incompat&incompatCompressed != 0:
		return errors.New("qcow2: Compression type incompatible feature bit must not be set")
	case h.compressionType != compressionZlib && h.incompat&incompatCompressed == 0:
		return errors.New("qcow2: Compression type incompatible feature bit must be set")
	}
	if h.incompat&incompatExtendedL2 != 0 && h.clusterBits < 14 {
		return corruptf("extended L2 entries need clusters of at least 16 KiB")
	}
	return nil
}

// knownFeatureTable is the feature name table this engine writes, QEMU's
// current one, so qemu-img and older QEMUs can name every bit they see.
var knownFeatureTable = []featureName{
	{0, 0, "dirty bit"},
	{0, 1, "corrupt bit"},
	{0, 2, "external data file"},
	{0, 3, "compression type"},
	{0, 4, "extended L2 entries"},
	{1, 0, "lazy refcounts"},
	{2, 0, "bitmaps"},
	{2, 1, "raw external data"},
}

// encode serializes the header with its extensions and backing name into
// one cluster-sized buffer. The optional feature name table is left out
// when it does not fit (512-byte clusters), as QEMU does.
func (h *header) encode() ([]byte, error) {
	if buf, err := h.encodeWith(true); err == nil {
		return buf, nil
	}
	return h.encodeWith(false)
}

// encodeWith lays the header out as QEMU does: the fixed fields, then the
// backing format, the external data file name, the feature name table (if
// featureTable and version 3),
// the preserved unknown extensions, the end marker, and last the backing
// file name. It sets headerLen, backingOff and backingLen to what it wrote,
// which is why h must not be shared while it runs.
func (h *header) encodeWith(featureTable bool) ([]byte, error) {
	cs := 1 << h.clusterBits
	buf := make([]byte, cs)
	be := binary.BigEndian
	copy(buf, Magic)
	be.PutUint32(buf[4:], h.version)
	be.PutUint32(buf[20:], h.clusterBits)
	be.PutUint64(buf[24:], h.size)
	be.PutUint32(buf[32:], h.cryptMethod)
	be.PutUint32(buf[36:], h.l1Size)
	be.PutUint64(buf[40:], h.l1Off)
	be.PutUint64(buf[48:], h.rtOff)
	be.PutUint32(buf[56:], h.rtClusters)
	be.PutUint32(buf[60:], h.nbSnapshots)
	be.PutUint64(buf[64:], h.snapOff)
	off := v2HeaderLen
	if h.version >= 3 {
		h.headerLen = v3HeaderLenWritten // fields beyond ours are not kept, as QEMU
		be.PutUint64(buf[72:], h.incompat)
		be.PutUint64(buf[80:], h.compat)
		be.PutUint64(buf[88:], h.autoclear)
		be.PutUint32(buf[96:], h.refcountOrder)
		be.PutUint32(buf[100:], h.headerLen)
		buf[104] = h.compressionType
		off = int(h.headerLen)
	}
	put := func(typ uint32, data []byte) error {
		n := 8 + (len(data)+7)&^7
		if off+n+8 > cs {
			return fmt.Errorf("header extensions do not fit in one %d-byte cluster", cs)
		}
		be.PutUint32(buf[off:], typ)
		be.PutUint32(buf[off+4:], uint32(len(data)))
		copy(buf[off+8:], data)
		off += n
		return nil
	}
	if h.backingFormat != "" {
		if err := put(extBackingFormat, []byte(h.backingFormat)); err != nil {
			return nil, err
		}
	}
	if h.cryptMethod == cryptLUKS {
		var ext [16]byte
		be.PutUint64(ext[:], h.cryptoOff)
		be.PutUint64(ext[8:], h.cryptoLen)
		if err := put(extCrypto, ext[:]); err != nil {
			return nil, err
		}
	}
	if h.dataFile != "" {
		if err := put(extDataFile, []byte(h.dataFile)); err != nil {
			return nil, err
		}
	}
	if h.version >= 3 && featureTable {
		ft := make([]byte, 48*len(knownFeatureTable))
		for i, f := range knownFeatureTable {
			ft[i*48] = f.kind
			ft[i*48+1] = f.bit
			copy(ft[i*48+2:i*48+48], f.name)
		}
		if err := put(extFeatureTable, ft); err != nil {
			return nil, err
		}
	}
	for _, e := range h.others {
		if err := put(e.typ, e.data); err != nil {
			return nil, err
		}
	}
	off += 8 // end-of-extensions marker (zeroes)
	h.backingOff, h.backingLen = 0, 0
	if h.backingFile != "" {
		if len(h.backingFile) > maxBackingNameLen {
			return nil, fmt.Errorf("backing file name is too long (%d bytes, limit %d)", len(h.backingFile), maxBackingNameLen)
		}
		if off+len(h.backingFile) > cs {
			return nil, fmt.Errorf("backing file name does not fit in the header cluster")
		}
		copy(buf[off:], h.backingFile)
		h.backingOff, h.backingLen = uint64(off), uint32(len(h.backingFile))
	}
	be.PutUint64(buf[8:], h.backingOff)
	be.PutUint32(buf[16:], h.backingLen)
	return buf, nil
}
