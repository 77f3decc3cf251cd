package aml

import (
	"encoding/binary"
	"fmt"
)

// Resource is one resource descriptor of a ResourceTemplate (ACPI 6.x
// section 6.4).
type Resource interface {
	appendResource(e *Encoder)
}

// ResourceTemplate is ASL ResourceTemplate(){...}: a Buffer holding the
// descriptors and an End Tag whose checksum byte is 0 ("treated as valid"),
// as iasl emits.
type ResourceTemplate []Resource

// AppendAML implements Term.
func (r ResourceTemplate) AppendAML(e *Encoder) {
	var inner Encoder
	for _, d := range r {
		if d == nil {
			inner.Fail(fmt.Errorf("aml: nil resource descriptor"))
			continue
		}
		d.appendResource(&inner)
	}
	inner.Emit(0x79, 0x00) // End Tag
	if inner.err != nil {
		e.Fail(inner.err)
		return
	}
	Buffer(inner.buf).AppendAML(e)
}

// IO is a 16-bit (Decode16) or 10-bit I/O port descriptor (6.4.2.5).
type IO struct {
	Decode16 bool
	Min, Max uint16
	Align    uint8
	Length   uint8
}

// appendResource writes the small I/O Port Descriptor: tag 0x47 (type 0x08,
// length 7), information byte (bit 0: 16-bit decode), minimum, maximum,
// alignment, length.
func (d IO) appendResource(e *Encoder) {
	var info byte
	if d.Decode16 {
		info = 1
	}
	e.Emit(0x47, info)
	e.buf = binary.LittleEndian.AppendUint16(e.buf, d.Min)
	e.buf = binary.LittleEndian.AppendUint16(e.buf, d.Max)
	e.Emit(d.Align, d.Length)
}

// IRQNoFlags is an IRQ descriptor without the flags byte (6.4.2.1): the
// IRQs are edge-triggered, active-high, exclusive.
type IRQNoFlags []uint8

// appendResource writes the 2-byte-body IRQ Descriptor (tag 0x22): a mask
// with bit n set for IRQ n; only IRQs 0-15 exist.
func (d IRQNoFlags) appendResource(e *Encoder) {
	var mask uint16
	for _, irq := range d {
		if irq > 15 {
			e.Fail(fmt.Errorf("aml: IRQNoFlags: IRQ %d is not 0-15", irq))
			return
		}
		mask |= 1 << irq
	}
	e.Emit(0x22)
	e.buf = binary.LittleEndian.AppendUint16(e.buf, mask)
}

// Interrupt is an Extended Interrupt descriptor (6.4.3.6).
type Interrupt struct {
	Consumer  bool // ResourceConsumer (else ResourceProducer)
	Edge      bool // Edge (else Level)
	ActiveLow bool // ActiveLow (else ActiveHigh)
	Shared    bool // Shared (else Exclusive)
	Wake      bool // ...AndWake
	GSIs      []uint32
}

// appendResource writes the Extended Interrupt Descriptor (6.4.3.6): large
// tag 0x89, length, flags (bit 0 consumer, 1 edge, 2 active-low, 3 shared,
// 4 wake capable), the count and the 32-bit interrupt numbers.
func (d Interrupt) appendResource(e *Encoder) {
	if len(d.GSIs) == 0 || len(d.GSIs) > 255 {
		e.Fail(fmt.Errorf("aml: Interrupt: %d interrupts, want 1-255", len(d.GSIs)))
		return
	}
	var flags byte
	for i, set := range []bool{d.Consumer, d.Edge, d.ActiveLow, d.Shared, d.Wake} {
		if set {
			flags |= 1 << i
		}
	}
	e.Emit(0x89)
	e.buf = binary.LittleEndian.AppendUint16(e.buf, uint16(2+4*len(d.GSIs)))
	e.Emit(flags, byte(len(d.GSIs)))
	for _, g := range d.GSIs {
		e.buf = binary.LittleEndian.AppendUint32(e.buf, g)
	}
}

// Address space descriptor fields shared by the Word, DWord and QWord forms
// (6.4.3.5): resource type, general flags, type-specific flags, then
// granularity, minimum, maximum, translation offset and length.
const (
	addrSpaceMemory = 0
	addrSpaceIO     = 1
	addrSpaceBus    = 2
)

// AddressFlags are the general flags of an address space descriptor.
type AddressFlags struct {
	Consumer  bool // ResourceConsumer (else ResourceProducer, as for a bridge)
	SubDecode bool // SubDecode (else PosDecode)
	MinFixed  bool
	MaxFixed  bool
}

// byte is the General Flags byte: bit 0 consumer, 1 subtractive decode,
// 2 minimum fixed, 3 maximum fixed.
func (f AddressFlags) byte() byte {
	var b byte
	for i, set := range []bool{f.Consumer, f.SubDecode, f.MinFixed, f.MaxFixed} {
		if set {
			b |= 1 << i
		}
	}
	return b
}

// Memory caching attributes (type-specific bits 2-1 of a memory range).
const (
	NonCacheable   = 0
	Cacheable      = 1
	WriteCombining = 2
	Prefetchable   = 3
)

// MemoryFlags are the type-specific flags of a memory range.
type MemoryFlags struct {
	Cache     int  // NonCacheable, Cacheable, WriteCombining, Prefetchable
	ReadWrite bool // ReadWrite (else ReadOnly)
}

// byte is the memory Type Specific Flags byte: bit 0 read-write, bits 2-1
// the caching attribute (MTP and TTP bits stay 0: AddressRangeMemory,
// TypeStatic).
func (f MemoryFlags) byte() byte {
	b := byte(f.Cache&3) << 1
	if f.ReadWrite {
		b |= 1
	}
	return b
}

// I/O range type-specific flags: ISA ranges decoded.
const (
	NonISAOnlyRanges = 1
	ISAOnlyRanges    = 2
	EntireRange      = 3
)

// appendAddressSpace writes a Word (tag 0x88), DWord (0x87) or QWord (0x8a)
// Address Space Descriptor whose five values are width bytes each; the
// length field counts the body after itself (3 flag bytes + 5 values). The
// optional resource source is never written.
func appendAddressSpace(e *Encoder, tag byte, width int, typ, general, specific byte, vals [5]uint64) {
	e.Emit(tag)
	e.buf = binary.LittleEndian.AppendUint16(e.buf, uint16(3+5*width))
	e.Emit(typ, general, specific)
	for _, v := range vals {
		switch width {
		case 2:
			e.buf = binary.LittleEndian.AppendUint16(e.buf, uint16(v))
		case 4:
			e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(v))
		default:
			e.buf = binary.LittleEndian.AppendUint64(e.buf, v)
		}
	}
}

// WordBusNumber is a Word Address Space descriptor for bus numbers.
type WordBusNumber struct {
	AddressFlags
	Granularity, Min, Max, Translation, Length uint16
}

func (d WordBusNumber) appendResource(e *Encoder) {
	appendAddressSpace(e, 0x88, 2, addrSpaceBus, d.AddressFlags.byte(), 0,
		[5]uint64{uint64(d.Granularity), uint64(d.Min), uint64(d.Max), uint64(d.Translation), uint64(d.Length)})
}

// WordIO is a Word Address Space descriptor for I/O ports.
type WordIO struct {
	AddressFlags
	ISARanges                                  int // NonISAOnlyRanges, ISAOnlyRanges, EntireRange
	Granularity, Min, Max, Translation, Length uint16
}

func (d WordIO) appendResource(e *Encoder) {
	appendAddressSpace(e, 0x88, 2, addrSpaceIO, d.AddressFlags.byte(), byte(d.ISARanges&3),
		[5]uint64{uint64(d.Granularity), uint64(d.Min), uint64(d.Max), uint64(d.Translation), uint64(d.Length)})
}

// DWordMemory is a DWord Address Space descriptor for memory.
type DWordMemory struct {
	AddressFlags
	MemoryFlags
	Granularity, Min, Max, Translation, Length uint32
}

func (d DWordMemory) appendResource(e *Encoder) {
	appendAddressSpace(e, 0x87, 4, addrSpaceMemory, d.AddressFlags.byte(), d.MemoryFlags.byte(),
		[5]uint64{uint64(d.Granularity), uint64(d.Min), uint64(d.Max), uint64(d.Translation), uint64(d.Length)})
}

// QWordMemory is a QWord Address Space descriptor for memory.
type QWordMemory struct {
	AddressFlags
	MemoryFlags
	Granularity, Min, Max, Translation, Length uint64
}

func (d QWordMemory) appendResource(e *Encoder) {
	appendAddressSpace(e, 0x8a, 8, addrSpaceMemory, d.AddressFlags.byte(), d.MemoryFlags.byte(),
		[5]uint64{d.Granularity, d.Min, d.Max, d.Translation, d.Length})
}
