package bzimage

import "fmt"

// lzo1xDecompress appends to dst the LZO1X decoding of src, which must
// produce exactly n bytes and end with the end-of-stream marker.
//
// The LZO1X stream is a sequence of instructions, each a literal run or a
// match (a copy from earlier output) followed by 0-3 literals whose count
// is in the low two bits of the match. The first byte of an instruction
// selects its kind:
//
//	0..15   after a match: M1, a 2-byte match within 1 KiB (or a 3-byte
//	        match 2-3 KiB back right after a literal run); otherwise a
//	        literal run of 3+ bytes (0 = long run, extended by zero bytes)
//	16..31  M4: match 16-48 KiB back (bit 3 = distance bit 14); 16 17 0 0
//	        (distance 0) ends the stream
//	32..63  M3: match up to 16 KiB back, 16-bit little-endian distance
//	64..255 M2: 3-8 byte match up to 2 KiB back
//
// A first byte above 17 is a literal run of (byte - 17). Every index is
// checked: bad input is ErrCorrupt, never a panic or an overrun.
func lzo1xDecompress(dst, src []byte, n int) ([]byte, error) {
	base := len(dst)
	end := base + n
	out := dst
	ip := 0
	state := 0 // literals copied after the last instruction: 0, 1-3, or 4 (a run)
	errf := func(format string, a ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: lzo1x at input %#x: %s", ErrCorrupt, ip, fmt.Sprintf(format, a...))
	}
	next := func() (int, bool) {
		if ip >= len(src) {
			return 0, false
		}
		b := src[ip]
		ip++
		return int(b), true
	}
	// extend adds the zero-byte-extended part of a length (255 per zero byte).
	extend := func(t, add int) (int, bool) {
		for ip < len(src) && src[ip] == 0 {
			t += 255
			ip++
			if t > n {
				return 0, false
			}
		}
		b, ok := next()
		return t + add + b, ok
	}
	literals := func(t int) bool {
		if t > len(src)-ip || len(out)+t > end {
			return false
		}
		out = append(out, src[ip:ip+t]...)
		ip += t
		return true
	}
	match := func(dist, t int) bool {
		from := len(out) - dist
		if from < base || len(out)+t > end {
			return false
		}
		for i := 0; i < t; i++ { // byte by byte: a match may overlap its own output
			out = append(out, out[from+i])
		}
		return true
	}

	// The first byte is special: above 17 it is a literal run of t-17
	// bytes with no instruction before it (lzo1x_decompress_safe's first
	// byte); otherwise it is re-read below as an ordinary instruction.
	t, ok := next()
	if !ok {
		return errf("empty stream")
	}
	if t > 17 {
		t -= 17
		if t < 4 {
			if !literals(t) {
				return errf("literals past the end")
			}
			state = t
		} else {
			if !literals(t) {
				return errf("literal run past the end")
			}
			state = 4
		}
	} else {
		ip = 0
	}
	for {
		if t, ok = next(); !ok {
			return errf("stream ends without an end marker")
		}
		// Each case sets the match's distance back from the end of the
		// output, its length, and the 0-3 literals that follow it (trail,
		// which becomes the next instruction's state).
		var dist, length, trail int
		switch {
		case t < 16 && state == 0:
			// After a match with no trailing literals: a literal run of
			// t+3 bytes, t = 0 being extended by zero bytes (15 + ...).
			if t == 0 {
				if t, ok = extend(0, 15); !ok {
					return errf("bad literal run length")
				}
			}
			if !literals(t + 3) {
				return errf("literal run of %d past the end", t+3)
			}
			state = 4
			continue
		case t < 16 && state != 4:
			// M1 after 1-3 trailing literals: 2 bytes, distance
			// 1 + (t>>2) + (b<<2), so up to 1 KiB.
			b, ok := next()
			if !ok {
				return errf("truncated M1 match")
			}
			dist = 1 + t>>2 + b<<2
			length = 2
			trail = t & 3
		case t < 16:
			// M1 right after a literal run: 3 bytes, 2049-3072 back.
			b, ok := next()
			if !ok {
				return errf("truncated M1 match")
			}
			dist = 1 + 0x800 + t>>2 + b<<2
			length = 3
			trail = t & 3
		case t >= 64:
			// M2: length (t>>5)+1, 3 distance bits in t and 8 in b.
			b, ok := next()
			if !ok {
				return errf("truncated M2 match")
			}
			dist = 1 + (t>>2)&7 + b<<3
			length = t>>5 + 1
			trail = t & 3
		case t >= 32:
			// M3: length in the low 5 bits (0 extended by zero bytes),
			// then a 14-bit distance and the trail in 2 LE bytes.
			length = t&31 + 2
			if length == 2 {
				if length, ok = extend(length, 31); !ok {
					return errf("bad M3 length")
				}
			}
			if ip+2 > len(src) {
				return errf("truncated M3 match")
			}
			d := int(src[ip]) | int(src[ip+1])<<8
			ip += 2
			dist = 1 + d>>2
			trail = d & 3
		default: // 16..31: M4 or the end marker
			high := (t & 8) << 11
			length = t&7 + 2
			if length == 2 {
				if length, ok = extend(length, 7); !ok {
					return errf("bad M4 length")
				}
			}
			if ip+2 > len(src) {
				return errf("truncated M4 match")
			}
			d := int(src[ip]) | int(src[ip+1])<<8
			ip += 2
			dist = high + d>>2
			trail = d & 3
			if dist == 0 {
				if length != 3 {
					return errf("bad end marker")
				}
				if ip != len(src) {
					return errf("%d bytes after the end marker", len(src)-ip)
				}
				if len(out) != end {
					return errf("%d bytes decoded, block says %d", len(out)-base, n)
				}
				return out, nil
			}
			dist += 0x4000
		}
		if !match(dist, length) {
			return errf("match of %d bytes %d back at output %d is out of range", length, dist, len(out)-base)
		}
		if !literals(trail) {
			return errf("trailing literals past the end")
		}
		state = trail
	}
}
