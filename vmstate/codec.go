package vmstate

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt is wrapped by every error about a malformed stream or section.
var ErrCorrupt = errors.New("corrupt saved machine state")

// Enc appends a section's fields. The zero value is ready to use.
type Enc struct{ b []byte }

// U8 appends one byte. Fields are packed: no padding or alignment
// between them, so reader and writer must agree on every field's width.
func (e *Enc) U8(v uint8) { e.b = append(e.b, v) }

// U16 appends v as 2 bytes, little-endian.
func (e *Enc) U16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }

// U32 appends v as 4 bytes, little-endian.
func (e *Enc) U32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }

// U64 appends v as 8 bytes, little-endian.
func (e *Enc) U64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

// Bool is one byte, 0 or 1.
func (e *Enc) Bool(v bool) {
	if v {
		e.U8(1)
	} else {
		e.U8(0)
	}
}

// Bytes writes b with a u32 length prefix.
func (e *Enc) Bytes(b []byte) {
	e.U32(uint32(len(b)))
	e.b = append(e.b, b...)
}

// String writes s with a u32 length prefix.
func (e *Enc) String(s string) {
	e.U32(uint32(len(s)))
	e.b = append(e.b, s...)
}

// Fixed writes b without a length: the reader knows its size (FixedInto).
func (e *Enc) Fixed(b []byte) { e.b = append(e.b, b...) }

// Data returns the encoded fields.
func (e *Enc) Data() []byte { return e.b }

// Dec reads a section's fields. The first failure sticks: later reads
// return zero values, and Err (or Finish) reports it, so a device reads all
// its fields and checks once.
type Dec struct {
	b       []byte // the section's payload
	off     int    // next byte to read
	err     error  // first failure, sticky
	section string // the section's name, for errors
}

// NewDec reads b, the payload of the named section (the name is for errors).
func NewDec(section string, b []byte) *Dec { return &Dec{b: b, section: section} }

// take returns the next n bytes of the payload, aliasing it, or nil once
// anything has failed; reading past the end is ErrCorrupt.
func (d *Dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.err = fmt.Errorf("%w: section %q: %d bytes wanted at offset %d, %d there", ErrCorrupt, d.section, n, d.off, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

// U8 reads what Enc.U8 wrote; like every Dec read it returns 0 once the
// decoder has failed, and a read past the payload's end fails it.
func (d *Dec) U8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

// U16 reads what Enc.U16 wrote (0 after a failure).
func (d *Dec) U16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

// U32 reads what Enc.U32 wrote (0 after a failure).
func (d *Dec) U32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

// U64 reads what Enc.U64 wrote (0 after a failure).
func (d *Dec) U64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// Bool reads one byte that must be 0 or 1.
func (d *Dec) Bool() bool {
	v := d.U8()
	if v > 1 {
		d.Failf("boolean field holds %d", v)
	}
	return v == 1
}

// Bytes reads a length-prefixed byte string of at most max bytes; the
// result aliases the section.
func (d *Dec) Bytes(max int) []byte {
	n := d.U32()
	if d.err == nil && uint64(n) > uint64(max) {
		d.Failf("byte string of %d bytes, at most %d allowed", n, max)
	}
	return d.take(int(n))
}

// String reads a length-prefixed string of at most max bytes.
func (d *Dec) String(max int) string { return string(d.Bytes(max)) }

// FixedInto fills dst from the next len(dst) bytes.
func (d *Dec) FixedInto(dst []byte) {
	if p := d.take(len(dst)); p != nil {
		copy(dst, p)
	}
}

// Version reads a u32 version written by the section's owner and fails
// unless it is between 1 and max (the newest this build reads).
func (d *Dec) Version(max uint32) uint32 {
	v := d.U32()
	if d.err == nil && (v == 0 || v > max) {
		d.Failf("version %d, this Petrel reads versions 1 to %d", v, max)
	}
	return v
}

// Failf records a semantic error (a value out of range) unless an earlier
// one stuck.
func (d *Dec) Failf(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: section %q: %s", ErrCorrupt, d.section, fmt.Sprintf(format, args...))
	}
}

// Err is the first failure, or nil.
func (d *Dec) Err() error { return d.err }

// Finish is Err, and also fails when bytes are left over.
func (d *Dec) Finish() error {
	if d.err == nil && d.off != len(d.b) {
		d.Failf("%d bytes left over after the last field", len(d.b)-d.off)
	}
	return d.err
}

// Stater is a device or machine part whose state is saved and loaded.
// SaveState appends the state (starting with its version, e.U32(v)) and
// LoadState reads it back (d.Version(max) first) into a device built with
// the same configuration, then returns d.Finish() or an error of its own.
// Both run while the vCPUs are paused and no I/O is in flight.
type Stater interface {
	SaveState(e *Enc)
	LoadState(d *Dec) error
}
