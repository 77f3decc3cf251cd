package aml

import (
	"errors"
	"fmt"
	"strings"
)

// Term is one AML construct (ACPI 6.x chapter 20, "ACPI Machine Language
// Specification"). Each ASL construct has a Go type whose AppendAML appends
// its encoding to the Encoder; a device can implement Term to describe itself.
type Term interface {
	AppendAML(e *Encoder)
}

// Encoder accumulates AML bytes and the first error met while encoding (an
// invalid name, an out-of-range value), so that terms append without
// returning errors at every level.
type Encoder struct {
	buf []byte
	err error
}

// Bytes returns the encoded bytes and the first error.
func (e *Encoder) Bytes() ([]byte, error) { return e.buf, e.err }

// Emit appends raw bytes.
func (e *Encoder) Emit(b ...byte) { e.buf = append(e.buf, b...) }

// Fail records err (with context) unless an earlier error is already recorded.
func (e *Encoder) Fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// Term appends t; a nil t is an error (an operand was left out).
func (e *Encoder) Term(t Term) {
	if t == nil {
		e.Fail(errors.New("aml: missing operand"))
		return
	}
	t.AppendAML(e)
}

// Terms appends each of ts.
func (e *Encoder) Terms(ts []Term) {
	for _, t := range ts {
		e.Term(t)
	}
}

// Encode returns the AML of terms in order.
func Encode(terms ...Term) ([]byte, error) {
	var e Encoder
	e.Terms(terms)
	return e.Bytes()
}

// Package lengths (20.2.4 PkgLength): one byte holds 0..63; otherwise the
// lead byte's bits 7-6 count 1-3 following bytes, its bits 3-0 are the low
// nibble and each following byte the next 8 bits, up to 2^28-1.
const maxPkgLength = 1<<28 - 1

// pkgLengthSize returns how many bytes encode n.
func pkgLengthSize(n int) int {
	switch {
	case n < 1<<6:
		return 1
	case n < 1<<12:
		return 2
	case n < 1<<20:
		return 3
	default:
		return 4
	}
}

// appendPkgLength appends n as a PkgLength of exactly size bytes.
func appendPkgLength(b []byte, n, size int) []byte {
	if size == 1 {
		return append(b, byte(n))
	}
	b = append(b, byte(size-1)<<6|byte(n&0xf))
	for n >>= 4; size > 1; size-- {
		b = append(b, byte(n))
		n >>= 8
	}
	return b
}

// Pkg appends prefix, then a PkgLength covering itself and the bytes body
// appends, then those bytes: the shape of every "Op PkgLength ..." term.
func (e *Encoder) Pkg(prefix []byte, body func(e *Encoder)) {
	inner := Encoder{}
	body(&inner)
	if inner.err != nil {
		e.Fail(inner.err)
	}
	n := len(inner.buf)
	size := pkgLengthSize(n + 1)
	if pkgLengthSize(n+size) > size {
		size++
	}
	if n+size > maxPkgLength {
		e.Fail(fmt.Errorf("aml: package of %d bytes exceeds the PkgLength limit", n))
		return
	}
	e.buf = append(e.buf, prefix...)
	e.buf = appendPkgLength(e.buf, n+size, size)
	e.buf = append(e.buf, inner.buf...)
}

// Names (20.2.2): a NameSeg is 4 characters, the first 'A'-'Z' or '_', the
// others also '0'-'9'; shorter segments are padded with '_'. A path is an
// optional root '\' or parent prefixes '^', then one segment (NameSeg), two
// (DualNamePrefix), or more (MultiNamePrefix + count); no segment at all is
// NullName.
const (
	dualNamePrefix  = 0x2e
	multiNamePrefix = 0x2f
	rootChar        = 0x5c
	parentPrefix    = 0x5e
	nullName        = 0x00
)

// Name appends path as a NameString.
func (e *Encoder) Name(path string) {
	b, err := appendNameString(e.buf, path)
	if err != nil {
		e.Fail(err)
		return
	}
	e.buf = b
}

// appendNameString appends path's NameString encoding to b. It never
// shortens a path (iasl -on keeps them as written too), so the bytes follow
// from the text alone.
func appendNameString(b []byte, path string) ([]byte, error) {
	rest := path
	if strings.HasPrefix(rest, `\`) {
		b = append(b, rootChar)
		rest = rest[1:]
	} else {
		for strings.HasPrefix(rest, "^") {
			b = append(b, parentPrefix)
			rest = rest[1:]
		}
	}
	if rest == "" {
		if path == "" || path[len(path)-1] == '^' {
			return b, fmt.Errorf("aml: name %q has no segment", path)
		}
		return append(b, nullName), nil
	}
	segs := strings.Split(rest, ".")
	switch {
	case len(segs) == 2:
		b = append(b, dualNamePrefix)
	case len(segs) > 255:
		return b, fmt.Errorf("aml: name %q has %d segments, more than 255", path, len(segs))
	case len(segs) > 2:
		b = append(b, multiNamePrefix, byte(len(segs)))
	}
	for _, s := range segs {
		seg, err := nameSeg(s)
		if err != nil {
			return b, fmt.Errorf("aml: name %q: %w", path, err)
		}
		b = append(b, seg[:]...)
	}
	return b, nil
}

// nameSeg validates and pads one segment.
func nameSeg(s string) ([4]byte, error) {
	seg := [4]byte{'_', '_', '_', '_'}
	if len(s) == 0 || len(s) > 4 {
		return seg, fmt.Errorf("segment %q is not 1-4 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			return seg, fmt.Errorf("segment %q: bad character %q at %d", s, c, i)
		}
		seg[i] = c
	}
	return seg, nil
}
