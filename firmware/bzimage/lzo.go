package bzimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/adler32"
	"hash/crc32"
)

// The kernel's LZO payload (CONFIG_KERNEL_LZO) is an lzop file
// ("lzop -9", see lib/decompress_unlzo.c for the reader the kernel uses):
// a header, then blocks of LZO1X data, each with its sizes and optional
// checksums, ended by a zero-length block.

// lzopMagic is the 9-byte signature every lzop file starts with.
var lzopMagic = []byte{0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a}

// lzop header flags (lzop's conf.h F_* bits): which checksums each block
// carries (D for the decompressed data, C for the compressed), whether
// the header has an extra field or a filter, and whether the header
// checksum is a CRC-32 rather than Adler-32.
const (
	lzopAdler32D   = 0x0001
	lzopAdler32C   = 0x0002
	lzopExtraField = 0x0040
	lzopCRC32D     = 0x0100
	lzopCRC32C     = 0x0200
	lzopFilter     = 0x0800
	lzopHeaderCRC  = 0x1000

	lzopMaxBlock = 64 << 20 // lzop itself never writes blocks above 64 MiB
)

// lzopReader walks the big-endian fields of an lzop file.
//
// It is sticky on error, as bufio.Scanner is: after the first short read
// every method returns zero values and err keeps the first failure, so
// decodeLZOP reads a run of fields and checks err once.
type lzopReader struct {
	b   []byte // the whole file
	off int    // next byte to read
	err error  // first failure
}

// take returns the next n bytes, aliasing b, or nil once past the end.
func (r *lzopReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = fmt.Errorf("%w: lzop data truncated at %#x", ErrCorrupt, r.off)
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

// u8, u16 and u32 read one big-endian field (0 after a failure).
func (r *lzopReader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *lzopReader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *lzopReader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

// decodeLZOP decodes an lzop file of LZO1X blocks, at most limit bytes.
func decodeLZOP(data []byte, limit int) ([]byte, error) {
	if !bytes.HasPrefix(data, lzopMagic) {
		return nil, fmt.Errorf("%w: no lzop magic", ErrCorrupt)
	}
	r := &lzopReader{b: data, off: len(lzopMagic)}
	// lzop 0.94 added the version-needed-to-extract, level and mtime-high
	// fields; older files lack them.
	version := r.u16()
	r.u16() // library version
	if version >= 0x0940 {
		r.u16() // version needed to extract
	}
	method := r.u8()
	if version >= 0x0940 {
		r.u8() // level
	}
	flags := r.u32()
	if flags&lzopFilter != 0 {
		return nil, fmt.Errorf("%w: lzop filter %#x", ErrUnsupported, r.u32())
	}
	r.u32() // mode
	r.u32() // mtime low
	if version >= 0x0940 {
		r.u32() // mtime high
	}
	r.take(int(r.u8())) // file name
	hdrEnd := r.off
	sum := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	var hsum uint32
	if flags&lzopHeaderCRC != 0 {
		hsum = crc32.ChecksumIEEE(data[len(lzopMagic):hdrEnd])
	} else {
		hsum = adler32.Checksum(data[len(lzopMagic):hdrEnd])
	}
	if hsum != sum {
		return nil, fmt.Errorf("%w: lzop header checksum mismatch", ErrCorrupt)
	}
	if method < 1 || method > 3 { // M_LZO1X_1, M_LZO1X_1_15, M_LZO1X_999
		return nil, fmt.Errorf("%w: lzop method %d", ErrUnsupported, method)
	}
	if flags&lzopExtraField != 0 {
		r.take(int(r.u32()))
		r.u32()
	}
	// Each block: uncompressed length (0 ends the file), compressed
	// length, the checksums the flags ask for, then the data. A block that
	// did not shrink is stored (srcLen == dstLen) and has no C checksums.
	var out []byte
	for {
		dstLen := int(r.u32())
		if r.err != nil {
			return nil, r.err
		}
		if dstLen == 0 {
			return out, nil
		}
		srcLen := int(r.u32())
		if dstLen > lzopMaxBlock || srcLen > dstLen || len(out)+dstLen > limit {
			return nil, fmt.Errorf("%w: lzop block of %d bytes from %d at %#x (limit %d)", ErrCorrupt, dstLen, srcLen, r.off, limit)
		}
		var dAdler, dCRC, cAdler, cCRC uint32
		if flags&lzopAdler32D != 0 {
			dAdler = r.u32()
		}
		if flags&lzopCRC32D != 0 {
			dCRC = r.u32()
		}
		compressed := srcLen < dstLen
		if compressed && flags&lzopAdler32C != 0 {
			cAdler = r.u32()
		}
		if compressed && flags&lzopCRC32C != 0 {
			cCRC = r.u32()
		}
		src := r.take(srcLen)
		if r.err != nil {
			return nil, r.err
		}
		if compressed && flags&lzopAdler32C != 0 && adler32.Checksum(src) != cAdler {
			return nil, fmt.Errorf("%w: lzop compressed-block Adler-32 mismatch", ErrCorrupt)
		}
		if compressed && flags&lzopCRC32C != 0 && crc32.ChecksumIEEE(src) != cCRC {
			return nil, fmt.Errorf("%w: lzop compressed-block CRC-32 mismatch", ErrCorrupt)
		}
		start := len(out)
		if compressed {
			var err error
			if out, err = lzo1xDecompress(out, src, dstLen); err != nil {
				return nil, fmt.Errorf("lzop block at %#x: %w", r.off-srcLen, err)
			}
		} else {
			out = append(out, src...)
		}
		blk := out[start:]
		if flags&lzopAdler32D != 0 && adler32.Checksum(blk) != dAdler {
			return nil, fmt.Errorf("%w: lzop block Adler-32 mismatch", ErrCorrupt)
		}
		if flags&lzopCRC32D != 0 && crc32.ChecksumIEEE(blk) != dCRC {
			return nil, fmt.Errorf("%w: lzop block CRC-32 mismatch", ErrCorrupt)
		}
	}
}
