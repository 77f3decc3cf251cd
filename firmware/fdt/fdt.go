// Package fdt builds and parses flattened device trees (the "DTB" format,
// version 17, as defined by the Devicetree Specification v0.4 chapter 5).
//
// A blob is laid out as: header (40 bytes), memory reservation block,
// structure block, strings block. Every multi-byte value is big-endian.
package fdt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Constants from Devicetree Specification section 5.
const (
	Magic = 0xd00dfeed

	// Version is the format version Builder emits; LastCompVersion the
	// oldest version it is backwards compatible with (spec 5.2).
	Version         = 17
	LastCompVersion = 16

	// headerSize is struct fdt_header (spec 5.2): ten big-endian 32-bit
	// fields, in this order: magic, totalsize, off_dt_struct,
	// off_dt_strings, off_mem_rsvmap, version, last_comp_version,
	// boot_cpuid_phys, size_dt_strings, size_dt_struct. Finish writes
	// them in that order and Parse reads them by index.
	headerSize = 40

	// Structure block tokens (spec 5.4.1), each a 32-bit word aligned to
	// 4 bytes: BEGIN_NODE is followed by the NUL-terminated unit name,
	// padded to 4; PROP by len, nameoff (an offset into the strings
	// block) and len bytes of value, padded to 4; END_NODE, NOP and END
	// carry nothing. END appears once, after the root's END_NODE.
	tokenBeginNode = 0x1
	tokenEndNode   = 0x2
	tokenProp      = 0x3
	tokenNop       = 0x4
	tokenEnd       = 0x9

	// maxNameLen bounds node and property names (spec 2.2.1, 2.2.4: 31
	// characters for a property name; node names are capped the same way
	// plus a unit address).
	maxPropNameLen = 31
	maxNodeNameLen = 31 + 1 + 64
)

// ErrBuild is wrapped by every error Builder reports.
var ErrBuild = errors.New("fdt build")

// Reservation is one entry of the memory reservation block (spec 5.3):
// physical memory the client program must not use for its own
// allocations (on pseries: the RTAS code the guest calls into).
type Reservation struct {
	Address, Size uint64
}

// Builder writes a tree sequentially, like libfdt's sequential-write mode:
// BeginNode, properties, child nodes, EndNode, and finally Finish.
// The first misuse (bad name, property outside a node, duplicate property,
// unbalanced nodes) is remembered and returned by Finish, so callers can
// chain calls without checking each one.
//
// Invariants: structure is always a whole number of 4-byte words (every
// token and name is padded with pad4), and once err is set nothing more
// is appended, so a failed build never yields a blob. Properties of a
// node must come before its children (spec 5.4.2); the Builder does not
// check that order; Parse refuses a blob that breaks it, and
// machine/pseries's tests parse every tree the machine builds.
type Builder struct {
	structure   []byte
	strings     []byte
	stringOff   map[string]uint32 // strings block dedup: name -> offset
	reserved    []Reservation
	bootCPU     uint32
	open        []map[string]bool // property names per open node, innermost last
	rootDone    bool              // the root node has been closed: no second root
	nextPhandle uint32
	err         error // the first misuse; sticky
}

// NewBuilder returns an empty builder.
func NewBuilder() *Builder {
	return &Builder{stringOff: map[string]uint32{}, nextPhandle: 1}
}

func (b *Builder) fail(format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf("%w: %s", ErrBuild, fmt.Sprintf(format, args...))
	}
}

// SetBootCPU sets the header's boot_cpuid_phys (the reg of the boot CPU).
func (b *Builder) SetBootCPU(id uint32) { b.bootCPU = id }

// Reserve adds a memory reservation block entry.
func (b *Builder) Reserve(addr, size uint64) {
	if size == 0 {
		b.fail("reservation at %#x has size 0", addr)
		return
	}
	if addr+size < addr {
		b.fail("reservation %#x+%#x wraps", addr, size)
		return
	}
	b.reserved = append(b.reserved, Reservation{addr, size})
}

// AllocPhandle returns a fresh phandle (1, 2, ...); 0 and 0xffffffff are
// never used (spec 2.3.3).
func (b *Builder) AllocPhandle() uint32 {
	p := b.nextPhandle
	b.nextPhandle++
	return p
}

// putU32 appends one big-endian word to the structure block.
func (b *Builder) putU32(v uint32) {
	b.structure = binary.BigEndian.AppendUint32(b.structure, v)
}

// pad4 zero-fills the structure block to the next token boundary: names
// and values are byte strings, but every token starts 4-byte aligned
// (spec 5.4.1, 5.6).
func (b *Builder) pad4() {
	for len(b.structure)%4 != 0 {
		b.structure = append(b.structure, 0)
	}
}

// BeginNode opens a node. The first node must be the root, named "".
func (b *Builder) BeginNode(name string) {
	if b.err != nil {
		return
	}
	if len(b.open) == 0 {
		if b.rootDone {
			b.fail("second root node %q", name)
			return
		}
		if name != "" {
			b.fail("root node must be named \"\", got %q", name)
			return
		}
	} else if err := checkNodeName(name); err != nil {
		b.fail("%v", err)
		return
	}
	b.putU32(tokenBeginNode)
	b.structure = append(b.structure, name...)
	b.structure = append(b.structure, 0)
	b.pad4()
	b.open = append(b.open, map[string]bool{})
}

// EndNode closes the innermost open node.
func (b *Builder) EndNode() {
	if b.err != nil {
		return
	}
	if len(b.open) == 0 {
		b.fail("EndNode without an open node")
		return
	}
	b.putU32(tokenEndNode)
	b.open = b.open[:len(b.open)-1]
	if len(b.open) == 0 {
		b.rootDone = true
	}
}

// Nop emits an FDT_NOP token (spec 5.4.1), which parsers skip.
func (b *Builder) Nop() {
	if b.err == nil {
		b.putU32(tokenNop)
	}
}

// stringOffset returns name's offset in the strings block (spec 5.5),
// appending it NUL-terminated the first time: every property of the same
// name shares one copy, as dtc and libfdt do.
func (b *Builder) stringOffset(name string) uint32 {
	if off, ok := b.stringOff[name]; ok {
		return off
	}
	off := uint32(len(b.strings))
	b.strings = append(b.strings, name...)
	b.strings = append(b.strings, 0)
	b.stringOff[name] = off
	return off
}

// Property adds a property with a raw value to the open node.
func (b *Builder) Property(name string, value []byte) {
	if b.err != nil {
		return
	}
	if len(b.open) == 0 {
		b.fail("property %q outside a node", name)
		return
	}
	if err := checkPropName(name); err != nil {
		b.fail("%v", err)
		return
	}
	props := b.open[len(b.open)-1]
	if props[name] {
		b.fail("duplicate property %q", name)
		return
	}
	props[name] = true
	b.putU32(tokenProp)
	b.putU32(uint32(len(value)))
	b.putU32(b.stringOffset(name))
	b.structure = append(b.structure, value...)
	b.pad4()
}

// PropertyEmpty adds a boolean (zero-length) property.
func (b *Builder) PropertyEmpty(name string) { b.Property(name, nil) }

// PropertyString adds a NUL-terminated string property.
func (b *Builder) PropertyString(name, s string) { b.PropertyStrings(name, s) }

// PropertyStrings adds a string-list property (each string NUL-terminated).
func (b *Builder) PropertyStrings(name string, ss ...string) {
	var v []byte
	for _, s := range ss {
		for i := 0; i < len(s); i++ {
			if s[i] == 0 {
				b.fail("property %q: string contains NUL", name)
				return
			}
		}
		v = append(v, s...)
		v = append(v, 0)
	}
	b.Property(name, v)
}

// PropertyU32 adds a property of big-endian 32-bit cells.
func (b *Builder) PropertyU32(name string, cells ...uint32) {
	v := make([]byte, 0, 4*len(cells))
	for _, c := range cells {
		v = binary.BigEndian.AppendUint32(v, c)
	}
	b.Property(name, v)
}

// PropertyU64 adds a property of big-endian 64-bit values (two cells each).
func (b *Builder) PropertyU64(name string, vals ...uint64) {
	v := make([]byte, 0, 8*len(vals))
	for _, x := range vals {
		v = binary.BigEndian.AppendUint64(v, x)
	}
	b.Property(name, v)
}

// Finish returns the blob, or the first error recorded while building.
func (b *Builder) Finish() ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	if len(b.open) != 0 {
		return nil, fmt.Errorf("%w: %d nodes left open", ErrBuild, len(b.open))
	}
	if !b.rootDone {
		return nil, fmt.Errorf("%w: no root node", ErrBuild)
	}
	// The spec does not require sorted reservations, but sorting makes
	// the blob independent of the order Reserve was called in.
	rsv := append([]Reservation(nil), b.reserved...)
	sort.Slice(rsv, func(i, j int) bool { return rsv[i].Address < rsv[j].Address })

	// Layout: header, reservations (each {address, size} as two 64-bit
	// words, then an all-zero terminator), structure block, strings
	// block; the strings block needs no alignment (spec 5.6).
	offRsv := uint32(headerSize) // already 8-aligned (spec 5.3: 8-byte aligned)
	rsvSize := uint32(16 * (len(rsv) + 1))
	offStruct := offRsv + rsvSize
	structSize := uint32(len(b.structure) + 4) // + FDT_END
	offStrings := offStruct + structSize
	total := offStrings + uint32(len(b.strings))

	out := make([]byte, 0, total)
	for _, v := range []uint32{Magic, total, offStruct, offStrings, offRsv,
		Version, LastCompVersion, b.bootCPU, uint32(len(b.strings)), structSize} {
		out = binary.BigEndian.AppendUint32(out, v)
	}
	for _, r := range rsv {
		out = binary.BigEndian.AppendUint64(out, r.Address)
		out = binary.BigEndian.AppendUint64(out, r.Size)
	}
	out = append(out, make([]byte, 16)...)
	out = append(out, b.structure...)
	out = binary.BigEndian.AppendUint32(out, tokenEnd)
	out = append(out, b.strings...)
	return out, nil
}

// checkNodeName enforces spec 2.2.1: node-name[@unit-address], node-name
// 1..31 characters from [0-9a-zA-Z,._+-], unit address from the same set.
func checkNodeName(name string) error {
	if name == "" || len(name) > maxNodeNameLen {
		return fmt.Errorf("node name %q: bad length", name)
	}
	at := -1
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '@' && at < 0 && i > 0:
			at = i
		case isNameChar(c):
		default:
			return fmt.Errorf("node name %q: bad character %q", name, c)
		}
	}
	if at < 0 && len(name) > 31 || at > 31 || at == len(name)-1 {
		return fmt.Errorf("node name %q: bad form", name)
	}
	return nil
}

// checkPropName enforces spec 2.2.4: 1..31 characters from [0-9a-zA-Z,._+?#-].
func checkPropName(name string) error {
	if name == "" || len(name) > maxPropNameLen {
		return fmt.Errorf("property name %q: bad length", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isNameChar(c) && c != '?' && c != '#' {
			return fmt.Errorf("property name %q: bad character %q", name, c)
		}
	}
	return nil
}

// isNameChar reports whether c may appear in a node name or a property
// name (spec tables 2.1 and 2.2; property names add '?' and '#').
func isNameChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
		c == ',' || c == '.' || c == '_' || c == '+' || c == '-'
}
