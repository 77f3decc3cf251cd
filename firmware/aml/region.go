package aml

import "fmt"

const (
	opRegionExt = 0x80
	fieldExt    = 0x81
)

// RegionSpace is an OperationRegion address space (19.6.100).
type RegionSpace byte

// Address spaces.
const (
	SystemMemory RegionSpace = 0x00
	SystemIO     RegionSpace = 0x01
	PCIConfig    RegionSpace = 0x02
)

// OperationRegion is ASL OperationRegion(Name, Space, Offset, Length).
type OperationRegion struct {
	Name           string
	Space          RegionSpace
	Offset, Length Term
}

// AppendAML implements Term.
func (r OperationRegion) AppendAML(e *Encoder) {
	e.Emit(extOp, opRegionExt)
	e.Name(r.Name)
	e.Emit(byte(r.Space))
	e.Term(r.Offset)
	e.Term(r.Length)
}

// FieldAccess is a field's AccessType (bits 0-3 of FieldFlags).
type FieldAccess byte

// Access types.
const (
	AnyAcc    FieldAccess = 0
	ByteAcc   FieldAccess = 1
	WordAcc   FieldAccess = 2
	DWordAcc  FieldAccess = 3
	QWordAcc  FieldAccess = 4
	BufferAcc FieldAccess = 5
)

// FieldUpdate is a field's UpdateRule (bits 5-6 of FieldFlags).
type FieldUpdate byte

// Update rules.
const (
	Preserve     FieldUpdate = 0
	WriteAsOnes  FieldUpdate = 1
	WriteAsZeros FieldUpdate = 2
)

// FieldUnit is one entry of a Field list: a named unit of Bits bits, or,
// with an empty Name, Bits reserved bits (ASL ", n" or the gap of an Offset()).
type FieldUnit struct {
	Name string
	Bits int
}

// Field is ASL Field(Region, Access, Lock|NoLock, Update){units}.
type Field struct {
	Region string
	Access FieldAccess
	Lock   bool
	Update FieldUpdate
	Units  []FieldUnit
}

// AppendAML implements Term.
func (f Field) AppendAML(e *Encoder) {
	if f.Access > BufferAcc || f.Update > WriteAsZeros {
		e.Fail(fmt.Errorf("aml: field of %s: bad access type %d or update rule %d", f.Region, f.Access, f.Update))
		return
	}
	flags := byte(f.Access) | byte(f.Update)<<5
	if f.Lock {
		flags |= 1 << 4
	}
	e.Pkg([]byte{extOp, fieldExt}, func(e *Encoder) {
		e.Name(f.Region)
		e.Emit(flags)
		for _, u := range f.Units {
			// A field's bit count is a PkgLength that does not count itself.
			if u.Bits <= 0 || u.Bits > maxPkgLength {
				e.Fail(fmt.Errorf("aml: field unit %q of %s: %d bits out of range", u.Name, f.Region, u.Bits))
				return
			}
			if u.Name == "" {
				e.Emit(0x00) // ReservedField
			} else {
				seg, err := nameSeg(u.Name)
				if err != nil {
					e.Fail(fmt.Errorf("aml: field unit of %s: %w", f.Region, err))
					return
				}
				e.Emit(seg[:]...)
			}
			e.buf = appendPkgLength(e.buf, u.Bits, pkgLengthSize(u.Bits))
		}
	})
}
