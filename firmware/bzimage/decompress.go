package bzimage

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// Compression is a kernel payload format (CONFIG_KERNEL_*).
type Compression int

// The formats arch/x86/boot/compressed can carry.
// Unknown is a payload whose magic matches none of them; Decompress fails
// on it with ErrUnsupported, and the kernel is then booted by the 64-bit
// protocol, its own decompressor doing the work.
const (
	Unknown Compression = iota
	Gzip
	Bzip2
	LZMA
	XZ
	LZO
	LZ4
	Zstd
)

// String is the format's name as CONFIG_KERNEL_* spells it, lower case.
func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Bzip2:
		return "bzip2"
	case LZMA:
		return "lzma"
	case XZ:
		return "xz"
	case LZO:
		return "lzo"
	case LZ4:
		return "lz4"
	case Zstd:
		return "zstd"
	}
	return "unknown"
}

// MaxDecompressed bounds a decompressed kernel whatever its header says:
// vmlinux images are tens of MiB, so 512 MiB stops only a corrupt or
// hostile header from making the VMM allocate without bound.
const MaxDecompressed = 512 << 20

// ErrUnsupported is returned for a payload format Petrel cannot decompress;
// the caller boots the bzImage by the 64-bit protocol instead.
var ErrUnsupported = errors.New("unsupported kernel compression")

// ErrCorrupt is wrapped by every error about a damaged payload. Unlike
// ErrUnsupported it is no reason to fall back to the 64-bit protocol:
// machine/pc reports it, since the kernel's own decompressor would meet
// the same damage (or a bug of Petrel's decoders, which must be seen).
var ErrCorrupt = errors.New("corrupt kernel payload")

// detect names the payload format from its magic bytes
// (the same table as lib/decompress.c's compressed_formats).
//
// The magics: gzip's ID1 ID2 (RFC 1952); bzip2's "BZh"; for .lzma, the
// properties byte 0x5d (lc=3, lp=0, pb=2, what every lzma tool writes)
// and the low bytes of a power-of-two dictionary size; the xz stream
// header; lzop's signature; the LZ4 legacy frame magic 0x184c2102
// (little-endian; the kernel's build runs lz4 -l); zstd's frame magic
// 0xfd2fb528 (little-endian, RFC 8878 §3.1.1).
func detect(p []byte) Compression {
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(p, []byte("BZh")):
		return Bzip2
	case bytes.HasPrefix(p, []byte{0x5d, 0x00, 0x00}):
		return LZMA
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return XZ
	case bytes.HasPrefix(p, []byte{0x89, 'L', 'Z', 'O'}):
		return LZO
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		return LZ4
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	}
	return Unknown
}

// Limit is the most bytes Decompress will produce: init_size (which the
// boot protocol guarantees covers the decompressed kernel) capped by
// MaxDecompressed.
func (img *Image) Limit() int {
	if img.InitSize == 0 || img.InitSize > MaxDecompressed {
		return MaxDecompressed
	}
	return int(img.InitSize)
}

// Decompress returns the decompressed payload: the vmlinux ELF, followed by
// its relocation table when the kernel is relocatable. The result must be
// exactly the size the build appended (DeclaredSize), which catches a
// truncated or padded payload that a decoder would otherwise accept.
func (img *Image) Decompress() ([]byte, error) {
	limit := img.Limit()
	want := int(img.DeclaredSize())
	if want > limit {
		return nil, fmt.Errorf("%w: declared size %d exceeds the limit %d", ErrCorrupt, want, limit)
	}
	out, err := decompress(img.Compression, img.Payload, limit)
	if err != nil {
		return nil, fmt.Errorf("decompressing %s payload: %w", img.Compression, err)
	}
	if len(out) != want {
		return nil, fmt.Errorf("%w: %s payload gave %d bytes, its trailer says %d", ErrCorrupt, img.Compression, len(out), want)
	}
	return out, nil
}

// decompress decodes payload, a compressed stream followed by the 4-byte
// size the kernel build appends (for gzip that is the gzip ISIZE field
// itself), producing at most limit bytes.
func decompress(c Compression, payload []byte, limit int) ([]byte, error) {
	if len(payload) < 4 {
		return nil, fmt.Errorf("%w: %d-byte payload", ErrCorrupt, len(payload))
	}
	stream := payload[:len(payload)-4]
	var r io.Reader
	switch c {
	case Gzip:
		// The whole payload: the trailer is gzip's own ISIZE, read and
		// checked by the library together with the CRC-32. Multistream
		// is off so that nothing after the first member is taken as more
		// data.
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		zr.Multistream(false)
		r = zr
	case Bzip2:
		r = bzip2.NewReader(bytes.NewReader(stream))
	case LZMA:
		// The .lzma header (props, dict size, size) names a dictionary the
		// library allocates whole; "lzma -9" asks 64 MiB. No match distance
		// can reach past the output, so a dictionary of limit bytes decodes
		// every stream that fits the limit.
		if len(stream) < lzma.HeaderLen {
			return nil, fmt.Errorf("%w: lzma header truncated", ErrCorrupt)
		}
		hdr := append([]byte(nil), stream[:lzma.HeaderLen]...)
		if d := binary.LittleEndian.Uint32(hdr[1:]); d > uint32(limit) {
			binary.LittleEndian.PutUint32(hdr[1:], uint32(max(limit, lzma.MinDictCap)))
		}
		zr, err := lzma.NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(stream[lzma.HeaderLen:])))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		r = zr
	case XZ:
		return decodeXZ(stream, limit)
	case LZO:
		return decodeLZOP(stream, limit)
	case LZ4:
		// The legacy format has no end marker: the stream ends with the
		// data, and the size trailer must not be read as another block.
		r = lz4.NewReader(bytes.NewReader(stream))
	case Zstd:
		// The decoder allocates the frame's whole window up front, and the
		// kernel's "zstd -22 --ultra" reads stdin, so it declares a 128 MiB
		// window whatever the kernel's size. No offset reaches past the
		// output, so the first frame's window is lowered to the limit.
		window := zstdWindowCap(limit)
		head := capZstdWindow(stream, window)
		zr, err := zstd.NewReader(io.MultiReader(bytes.NewReader(head), bytes.NewReader(stream[len(head):])),
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(window),
			zstd.WithDecoderMaxWindow(window))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("%w: magic % x", ErrUnsupported, payload[:min(len(payload), 6)])
	}
	return readLimited(r, limit)
}

// readLimited reads r to its end, failing once it exceeds limit bytes.
func readLimited(r io.Reader, limit int) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: after %d bytes: %v", ErrCorrupt, n, err)
	}
	if n > int64(limit) {
		return nil, fmt.Errorf("%w: output exceeds the limit of %d bytes", ErrCorrupt, limit)
	}
	return buf.Bytes(), nil
}

// zstdHeaderPrefix covers the magic (bytes 0-3), Frame_Header_Descriptor
// (byte 4) and Window_Descriptor (byte 5) (RFC 8878 3.1.1.1).
const zstdHeaderPrefix = 6

// zstdWindowCap is the smallest power of two >= limit, at least 1 MiB (so
// that the 128 KiB maximum block size stays below the window).
func zstdWindowCap(limit int) uint64 {
	w := uint64(1 << 20)
	for w < uint64(limit) {
		w <<= 1
	}
	return w
}

// capZstdWindow returns the first bytes of a zstd stream with the first
// frame's Window_Descriptor lowered to window when it declares more.
func capZstdWindow(stream []byte, window uint64) []byte {
	head := append([]byte(nil), stream[:min(len(stream), zstdHeaderPrefix)]...)
	if len(head) < zstdHeaderPrefix || head[4]&0x20 != 0 { // Single_Segment: no window descriptor
		return head
	}
	// RFC 8878 §3.1.1.1.2: Exponent is the top 5 bits, Mantissa the low
	// 3; Window_Size = 2^(10+Exponent) + 2^(10+Exponent)/8 * Mantissa.
	// The rewritten descriptor has Mantissa 0 and the smallest Exponent
	// whose power of two reaches window.
	wd := head[5]
	log := uint(10 + wd>>3)
	size := uint64(1)<<log + (uint64(1)<<log)/8*uint64(wd&7)
	if size > window {
		exp := 0
		for uint64(1)<<(10+exp) < window {
			exp++
		}
		head[5] = byte(exp << 3)
	}
	return head
}
