package aml

import (
	"encoding/binary"
	"fmt"
)

// Data object opcodes (20.2.3).
const (
	zeroOp       = 0x00
	oneOp        = 0x01
	bytePrefix   = 0x0a
	wordPrefix   = 0x0b
	dwordPrefix  = 0x0c
	stringPrefix = 0x0d
	qwordPrefix  = 0x0e
	bufferOp     = 0x11
	packageOp    = 0x12
	varPackOp    = 0x13
	onesOp       = 0xff
	local0Op     = 0x60
	arg0Op       = 0x68
)

// Integer is an integer constant in its shortest encoding: ZeroOp, OneOp,
// OnesOp (all 64 bits set; tables are revision 2, so integers are 64-bit),
// then Byte/Word/DWord/QWord prefixes, as iasl emits.
type Integer uint64

// Well-known integer constants.
const (
	Zero Integer = 0
	One  Integer = 1
	Ones Integer = ^Integer(0)
)

// AppendAML implements Term.
func (i Integer) AppendAML(e *Encoder) {
	v := uint64(i)
	switch {
	case v == 0:
		e.Emit(zeroOp)
	case v == 1:
		e.Emit(oneOp)
	case v == ^uint64(0):
		e.Emit(onesOp)
	case v <= 0xff:
		e.Emit(bytePrefix, byte(v))
	case v <= 0xffff:
		e.Emit(wordPrefix)
		e.buf = binary.LittleEndian.AppendUint16(e.buf, uint16(v))
	case v <= 0xffffffff:
		e.Emit(dwordPrefix)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(v))
	default:
		e.Emit(qwordPrefix)
		e.buf = binary.LittleEndian.AppendUint64(e.buf, v)
	}
}

// String is a string constant: ASCII characters 0x01-0x7f, NUL-terminated.
type String string

// AppendAML implements Term.
func (s String) AppendAML(e *Encoder) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7f {
			e.Fail(fmt.Errorf("aml: string %q: byte %#x at %d is not 7-bit ASCII", string(s), s[i], i))
			return
		}
	}
	e.Emit(stringPrefix)
	e.buf = append(e.buf, s...)
	e.Emit(0)
}

// EisaID is a compressed EISA ID such as "PNP0A03" (ASL EisaId()): three
// upper-case letters and four hex digits, packed big-endian into a DWord,
// always with the DWord prefix as iasl does.
type EisaID string

// Value returns the packed ID.
func (id EisaID) Value() (uint32, error) {
	s := string(id)
	if len(s) != 7 {
		return 0, fmt.Errorf("aml: EISA id %q is not 7 characters", s)
	}
	var v uint32
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return 0, fmt.Errorf("aml: EISA id %q: %q is not an upper-case letter", s, s[i])
		}
		v = v<<5 | uint32(s[i]-'@')
	}
	for i := 3; i < 7; i++ {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("aml: EISA id %q: %q is not an upper-case hex digit", s, c)
		}
		v = v<<4 | uint32(d)
	}
	// Stored as the bytes of v in big-endian order, read as a little-endian DWord.
	return v>>24 | v>>8&0xff00 | v<<8&0xff0000 | v<<24, nil
}

// AppendAML implements Term.
func (id EisaID) AppendAML(e *Encoder) {
	v, err := id.Value()
	if err != nil {
		e.Fail(err)
		return
	}
	e.Emit(dwordPrefix)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, v)
}

// Buffer is a buffer constant (ASL Buffer(){...}).
type Buffer []byte

// AppendAML implements Term.
func (b Buffer) AppendAML(e *Encoder) {
	e.Pkg([]byte{bufferOp}, func(e *Encoder) {
		e.Term(Integer(len(b)))
		e.Emit(b...)
	})
}

// Package is a package of data objects (ASL Package(){...}); more than 255
// elements use VarPackageOp with an Integer count.
type Package []Term

// AppendAML implements Term.
func (p Package) AppendAML(e *Encoder) {
	if len(p) > 255 {
		e.Pkg([]byte{varPackOp}, func(e *Encoder) {
			e.Term(Integer(len(p)))
			e.Terms(p)
		})
		return
	}
	e.Pkg([]byte{packageOp}, func(e *Encoder) {
		e.Emit(byte(len(p)))
		e.Terms(p)
	})
}

// LocalObj is a method local variable; use Local0..Local7.
type LocalObj uint8

// Method locals.
const (
	Local0 LocalObj = iota
	Local1
	Local2
	Local3
	Local4
	Local5
	Local6
	Local7
)

// AppendAML implements Term.
func (l LocalObj) AppendAML(e *Encoder) {
	if l > 7 {
		e.Fail(fmt.Errorf("aml: Local%d does not exist", l))
		return
	}
	e.Emit(local0Op + byte(l))
}

// ArgObj is a method argument; use Arg0..Arg6.
type ArgObj uint8

// Method arguments.
const (
	Arg0 ArgObj = iota
	Arg1
	Arg2
	Arg3
	Arg4
	Arg5
	Arg6
)

// AppendAML implements Term.
func (a ArgObj) AppendAML(e *Encoder) {
	if a > 6 {
		e.Fail(fmt.Errorf("aml: Arg%d does not exist", a))
		return
	}
	e.Emit(arg0Op + byte(a))
}

// Path refers to a named object (a NameString used as an operand or a
// target), e.g. Path(`\_SB.PCI0.PCIU`).
type Path string

// AppendAML implements Term.
func (p Path) AppendAML(e *Encoder) { e.Name(string(p)) }

// Call invokes a method: its NameString followed by its arguments.
type Call struct {
	Method string
	Args   []Term
}

// AppendAML implements Term.
func (c Call) AppendAML(e *Encoder) {
	if len(c.Args) > 7 {
		e.Fail(fmt.Errorf("aml: call of %s with %d arguments, at most 7", c.Method, len(c.Args)))
		return
	}
	e.Name(c.Method)
	e.Terms(c.Args)
}
