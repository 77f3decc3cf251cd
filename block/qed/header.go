package qed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// On-disk constants (qed_spec.txt "Header" and "Feature bits").
const (
	magic      = 0x00444551 // "QED\0" little-endian
	headerLen  = 64         // bytes of the fixed header
	sectorSize = 512        // image_size granularity

	featBackingFile    = 0x01 // QED_F_BACKING_FILE
	featNeedCheck      = 0x02 // QED_F_NEED_CHECK
	featBackingNoProbe = 0x04 // QED_F_BACKING_FORMAT_NO_PROBE
	knownFeatures      = featBackingFile | featNeedCheck | featBackingNoProbe

	// Limits from the spec's field descriptions: cluster_size a power of
	// 2 in [2^12, 2^26], table_size a power of 2 in [1, 16]. The defaults
	// are qemu-img's (64 KiB clusters, 4-cluster tables: 256 KiB tables
	// mapping 2 GiB each).
	minClusterSize     = 1 << 12
	maxClusterSize     = 1 << 26
	defaultClusterSize = 64 << 10
	defaultTableSize   = 4
	maxTableSize       = 16

	// maxBackingName bounds the backing file name a header may claim
	// (QEMU keeps it in a PATH_MAX buffer).
	maxBackingName = 4096

	// entryZero is the L2 value for a zero cluster ("Data cluster offsets").
	entryZero = 1
)

// ErrNotQED is returned for files without the QED magic.
var ErrNotQED = errors.New("Image not in QED format") // qed_open's words

// header is the QED header as stored at offset 0 (spec "Header"), fields in
// on-disk order, all little-endian: cluster_size in bytes; table_size and
// header_size in clusters; the three feature bitmaps; l1_table_offset and
// image_size in bytes; the backing file name's offset (from the start of
// the file, within the first header_size clusters) and size in bytes,
// meaningful only with QED_F_BACKING_FILE.
type header struct {
	ClusterSize       uint32
	TableSize         uint32 // in clusters
	HeaderSize        uint32 // in clusters
	Features          uint64
	CompatFeatures    uint64
	AutoclearFeatures uint64
	L1TableOffset     uint64
	ImageSize         uint64
	BackingNameOffset uint32
	BackingNameSize   uint32
}

// parseHeader decodes the fixed 64-byte header; it checks only the magic
// (ErrNotQED), validate checks the values.
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerLen {
		return h, fmt.Errorf("header truncated (%d bytes)", len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != magic {
		return h, ErrNotQED
	}
	h.ClusterSize = le.Uint32(b[4:])
	h.TableSize = le.Uint32(b[8:])
	h.HeaderSize = le.Uint32(b[12:])
	h.Features = le.Uint64(b[16:])
	h.CompatFeatures = le.Uint64(b[24:])
	h.AutoclearFeatures = le.Uint64(b[32:])
	h.L1TableOffset = le.Uint64(b[40:])
	h.ImageSize = le.Uint64(b[48:])
	h.BackingNameOffset = le.Uint32(b[56:])
	h.BackingNameSize = le.Uint32(b[60:])
	return h, nil
}

// encode is the inverse of parseHeader: the 64 bytes written at offset 0.
func (h *header) encode() []byte {
	b := make([]byte, headerLen)
	le := binary.LittleEndian
	le.PutUint32(b[0:], magic)
	le.PutUint32(b[4:], h.ClusterSize)
	le.PutUint32(b[8:], h.TableSize)
	le.PutUint32(b[12:], h.HeaderSize)
	le.PutUint64(b[16:], h.Features)
	le.PutUint64(b[24:], h.CompatFeatures)
	le.PutUint64(b[32:], h.AutoclearFeatures)
	le.PutUint64(b[40:], h.L1TableOffset)
	le.PutUint64(b[48:], h.ImageSize)
	le.PutUint32(b[56:], h.BackingNameOffset)
	le.PutUint32(b[60:], h.BackingNameSize)
	return b
}

// isPow2 reports whether v is a power of two (0 is not).
func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

// tableEntries is TABLE_NOFFSETS (spec "Tables"), the 8-byte entries in
// one L1 or L2 table.
func (h *header) tableEntries() uint64 {
	return uint64(h.TableSize) * uint64(h.ClusterSize) / 8
}

// maxImageSize is TABLE_NOFFSETS^2 * cluster_size (the spec's bound,
// "Tables"), saturating at 2^64-1 instead of overflowing (16-cluster
// tables of 64 MiB clusters would map far more than 2^64 bytes).
func maxImageSize(clusterSize, tableSize uint64) uint64 {
	n := tableSize * clusterSize / 8
	hi, lo := bits.Mul64(n*n, clusterSize)
	if hi != 0 {
		return ^uint64(0)
	}
	return lo
}

// validate checks every field a file can lie about against the spec's
// ranges and the real file size, so that nothing later allocates or seeks
// according to an unchecked value. Unknown feature bits refuse the image
// (spec "Header"); unknown compat bits are ignored and unknown autoclear
// bits cleared later (openFixups). image_size is further capped at 2^62 so
// that offset arithmetic in int64 cannot overflow.
func (h *header) validate(fileSize int64) error {
	cs := uint64(h.ClusterSize)
	if !isPow2(cs) || cs < minClusterSize || cs > maxClusterSize {
		return fmt.Errorf("invalid cluster size %d", h.ClusterSize)
	}
	if !isPow2(uint64(h.TableSize)) || h.TableSize > maxTableSize {
		return fmt.Errorf("invalid table size %d", h.TableSize)
	}
	if unknown := h.Features &^ knownFeatures; unknown != 0 {
		return fmt.Errorf("unsupported QED features %#x", unknown)
	}
	if h.HeaderSize == 0 || uint64(h.HeaderSize)*cs > uint64(fileSize) {
		return fmt.Errorf("invalid header size %d clusters", h.HeaderSize)
	}
	if h.ImageSize%sectorSize != 0 || h.ImageSize > maxImageSize(cs, uint64(h.TableSize)) || h.ImageSize > 1<<62 {
		return fmt.Errorf("invalid image size %d", h.ImageSize)
	}
	tableBytes := uint64(h.TableSize) * cs
	l1 := h.L1TableOffset
	if l1%cs != 0 || l1 < uint64(h.HeaderSize)*cs || l1 > uint64(fileSize) || tableBytes > uint64(fileSize)-l1 {
		return fmt.Errorf("invalid L1 table offset %#x", l1)
	}
	if h.Features&featBackingFile != 0 {
		off, n := uint64(h.BackingNameOffset), uint64(h.BackingNameSize)
		if n > maxBackingName || off+n > uint64(h.HeaderSize)*cs {
			return fmt.Errorf("invalid backing file name at %#x size %d", off, n)
		}
	}
	return nil
}
