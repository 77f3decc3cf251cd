package bzimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel's xz payload (scripts/xz_wrap.sh) chains the x86 BCJ filter
// before LZMA2, which the xz library does not decode, so the .xz container
// (tukaani xz-file-format 1.1) is read here and the LZMA2 chunks are handed
// to the library's LZMA2 reader.

// Filter IDs (xz-file-format 5.3) and the stream header's size (magic,
// two flag bytes, CRC-32 of the flags: xz-file-format 2.1.1).
const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
	xzHeaderSize  = 12
)

// xzMagic starts a stream header; the footer ends with "YZ".
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// xzCheckSize maps the stream's check type (xz-file-format 2.1.1.2) to its size.
func xzCheckSize(t byte) (int, error) {
	switch {
	case t == 0:
		return 0, nil
	case t <= 3:
		return 4, nil
	case t <= 6:
		return 8, nil
	case t <= 9:
		return 16, nil
	case t <= 12:
		return 32, nil
	case t <= 15:
		return 64, nil
	}
	return 0, fmt.Errorf("%w: xz check type %d", ErrCorrupt, t)
}

// byteCounter counts what the LZMA2 reader consumes, to find the block's end.
// The LZMA2 data has no length of its own in the block (the optional
// compressed size is not used), so its end is where the LZMA2 reader
// stopped reading. The library reads through ReadByte when its source has
// one and through Read otherwise, so both count.
type byteCounter struct {
	r *bytes.Reader
	n int // bytes consumed so far
}

// Read passes through to r, counting the bytes read.
func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// ReadByte passes through to r, counting a byte only if one was read.
func (c *byteCounter) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// decodeXZ decodes the blocks of the stream in data, at most limit bytes.
// The kernel's payload is one stream: anything after its footer but
// stream padding is refused (checkXZTail), a concatenated second stream
// included. Blocks are decoded as they come; the index is checked for
// its CRC and size only, not compared with the blocks.
func decodeXZ(data []byte, limit int) ([]byte, error) {
	if len(data) < xzHeaderSize || !bytes.HasPrefix(data, xzMagic) {
		return nil, fmt.Errorf("%w: no xz stream header", ErrCorrupt)
	}
	flags := data[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(data[8:12]) {
		return nil, fmt.Errorf("%w: xz stream header CRC mismatch", ErrCorrupt)
	}
	// Stream Flags: byte 0 is reserved (zero), the low nibble of byte 1
	// the check type (xz-file-format 2.1.1.2).
	checkType := flags[1] & 0x0f
	checkSize, err := xzCheckSize(checkType)
	if err != nil {
		return nil, err
	}
	var out []byte
	pos := xzHeaderSize
	for {
		if pos >= len(data) {
			return nil, fmt.Errorf("%w: xz stream ends without an index", ErrCorrupt)
		}
		if data[pos] == 0 { // index indicator: all blocks done
			if err := checkXZTail(data, pos, flags); err != nil {
				return nil, err
			}
			return out, nil
		}
		blk, n, err := decodeXZBlock(data[pos:], limit-len(out), checkType, checkSize)
		if err != nil {
			return nil, fmt.Errorf("xz block at %#x: %w", pos, err)
		}
		out = append(out, blk...)
		pos += n
	}
}

// decodeXZBlock decodes one block (header, data, padding, check) and
// returns its output and the bytes it spans.
func decodeXZBlock(data []byte, limit int, checkType byte, checkSize int) ([]byte, int, error) {
	// Block Header Size is stored as (real size / 4) - 1 (3.1.1); Block
	// Flags (3.1.2): bits 0-1 the number of filters minus one, 0x40 and
	// 0x80 the optional sizes, the rest reserved.
	hsize := (int(data[0]) + 1) * 4
	if hsize > len(data) {
		return nil, 0, fmt.Errorf("%w: block header of %d bytes is truncated", ErrCorrupt, hsize)
	}
	hdr := data[:hsize]
	if crc32.ChecksumIEEE(hdr[:hsize-4]) != binary.LittleEndian.Uint32(hdr[hsize-4:]) {
		return nil, 0, fmt.Errorf("%w: block header CRC mismatch", ErrCorrupt)
	}
	bflags := hdr[1]
	if bflags&0x3c != 0 {
		return nil, 0, fmt.Errorf("%w: reserved block flags %#x", ErrCorrupt, bflags)
	}
	p := hdr[2 : hsize-4]
	var err error
	if bflags&0x40 != 0 { // compressed size present
		if _, p, err = xzVarint(p); err != nil {
			return nil, 0, err
		}
	}
	if bflags&0x80 != 0 { // uncompressed size present
		if _, p, err = xzVarint(p); err != nil {
			return nil, 0, err
		}
	}
	nfilters := int(bflags&3) + 1
	var bcj, lzma2 bool
	var bcjStart uint32
	var dictCap int
	for i := 0; i < nfilters; i++ {
		var id, psize uint64
		if id, p, err = xzVarint(p); err != nil {
			return nil, 0, err
		}
		if psize, p, err = xzVarint(p); err != nil {
			return nil, 0, err
		}
		if psize > uint64(len(p)) {
			return nil, 0, fmt.Errorf("%w: filter properties overrun the block header", ErrCorrupt)
		}
		props := p[:psize]
		p = p[psize:]
		last := i == nfilters-1
		switch {
		case id == xzFilterX86 && !last && !bcj:
			bcj = true
			if len(props) == 4 {
				bcjStart = binary.LittleEndian.Uint32(props)
			} else if len(props) != 0 {
				return nil, 0, fmt.Errorf("%w: x86 BCJ properties of %d bytes", ErrCorrupt, len(props))
			}
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return nil, 0, fmt.Errorf("%w: LZMA2 properties % x", ErrCorrupt, props)
			}
			lzma2 = true
			dictCap = lzma2DictCap(props[0])
		default:
			return nil, 0, fmt.Errorf("%w: xz filter %#x in position %d", ErrUnsupported, id, i)
		}
	}
	if !lzma2 {
		return nil, 0, fmt.Errorf("%w: xz block without LZMA2", ErrUnsupported)
	}
	for _, b := range p {
		if b != 0 {
			return nil, 0, fmt.Errorf("%w: non-zero block header padding", ErrCorrupt)
		}
	}
	// The dictionary never needs to exceed the output.
	dictCap = max(min(dictCap, limit), lzma.MinDictCap)
	cr := &byteCounter{r: bytes.NewReader(data[hsize:])}
	zr, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(cr)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	out, err := readLimited(zr, limit)
	if err != nil {
		return nil, 0, err
	}
	n := hsize + cr.n
	n = (n + 3) &^ 3 // block padding
	if n+checkSize > len(data) {
		return nil, 0, fmt.Errorf("%w: block check is truncated", ErrCorrupt)
	}
	if bcj {
		unBCJx86(out, bcjStart)
	}
	// The check covers the output of the whole filter chain. Only CRC32
	// (type 1, what the kernel's xz_wrap.sh asks for) is verified; a
	// CRC64 or SHA-256 check is skipped over unverified.
	if checkType == 1 && crc32.ChecksumIEEE(out) != binary.LittleEndian.Uint32(data[n:]) {
		return nil, 0, fmt.Errorf("%w: block CRC32 mismatch", ErrCorrupt)
	}
	n += checkSize
	return out, n, nil
}

// checkXZTail checks that the index starting at pos is followed by a valid
// stream footer (xz-file-format 2.1.2) that ends the data, so that a
// truncated stream is an error even when all of its blocks decoded.
func checkXZTail(data []byte, pos int, flags []byte) error {
	// The footer (2.1.2) is CRC32 (4 bytes, over the next 6), Backward
	// Size (4, the index size stored as size/4 - 1), the Stream Flags
	// copied from the header (2) and "YZ" (2).
	end := len(data)
	for end-4 >= pos && binary.LittleEndian.Uint32(data[end-4:]) == 0 {
		end -= 4 // stream padding
	}
	if end-pos < 12+8 {
		return fmt.Errorf("%w: xz stream truncated after its blocks", ErrCorrupt)
	}
	foot := data[end-12 : end]
	if foot[10] != 'Y' || foot[11] != 'Z' || !bytes.Equal(foot[8:10], flags) {
		return fmt.Errorf("%w: no xz stream footer", ErrCorrupt)
	}
	if crc32.ChecksumIEEE(foot[4:10]) != binary.LittleEndian.Uint32(foot) {
		return fmt.Errorf("%w: xz stream footer CRC mismatch", ErrCorrupt)
	}
	indexSize := (int(binary.LittleEndian.Uint32(foot[4:])) + 1) * 4
	if indexSize != end-12-pos {
		return fmt.Errorf("%w: xz index of %d bytes where %d remain", ErrCorrupt, indexSize, end-12-pos)
	}
	index := data[pos : pos+indexSize]
	if crc32.ChecksumIEEE(index[:indexSize-4]) != binary.LittleEndian.Uint32(index[indexSize-4:]) {
		return fmt.Errorf("%w: xz index CRC mismatch", ErrCorrupt)
	}
	return nil
}

// lzma2DictCap decodes the LZMA2 dictionary-size byte (xz-file-format
// 5.3.1): (2 | (b & 1)) << (b/2 + 11) bytes, so 0 is 4 KiB and each step
// alternates between 2^n and 3*2^(n-1); 40 means 4 GiB - 1. Callers check
// b <= 40.
func lzma2DictCap(b byte) int {
	if b == 40 {
		return 0xffffffff
	}
	return (2 | int(b&1)) << (b/2 + 11)
}

// xzVarint reads an xz multibyte integer (xz-file-format 1.2).
// Seven bits per byte, least significant first, the top bit set on every
// byte but the last; at most 9 bytes, and a zero last byte (a non-minimal
// encoding) is refused as the format requires.
func xzVarint(p []byte) (uint64, []byte, error) {
	var v uint64
	for i := 0; i < 9 && i < len(p); i++ {
		v |= uint64(p[i]&0x7f) << (7 * i)
		if p[i]&0x80 == 0 {
			if i > 0 && p[i] == 0 {
				break
			}
			return v, p[i+1:], nil
		}
	}
	return 0, nil, fmt.Errorf("%w: bad xz integer", ErrCorrupt)
}

// unBCJx86 undoes the x86 branch converter in place: the encoder turned
// the relative targets of E8 (call) and E9 (jmp) instructions into absolute
// ones to help compression. start is the stream position of buf[0]. The
// algorithm is the one every xz implementation shares (xz-file-format 5.3.3
// names it); prevMask tracks recent E8/E9 bytes that were not converted.
func unBCJx86(buf []byte, start uint32) {
	if len(buf) <= 4 {
		return
	}
	// allowed and bitNum are liblzma's simple/x86.c tables
	// (MASK_TO_ALLOWED_STATUS, MASK_TO_BIT_NUMBER), indexed by prevMask.
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	// The encoder converted only operands whose top byte is 0x00 or 0xff,
	// i.e. displacements within ±16 MiB, as real calls and jumps are.
	msByte := func(b byte) bool { return b == 0x00 || b == 0xff }
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << uint(d-1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || msByte(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msByte(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (start + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !msByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		// Keep 25 bits and sign-extend from bit 24, so that the top byte
		// is again 0x00 or 0xff as the encoder found it.
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}

var _ io.ByteReader = (*byteCounter)(nil)
