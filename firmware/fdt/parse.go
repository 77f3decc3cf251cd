package fdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// ErrFormat is wrapped by every error Parse reports for a malformed blob.
var ErrFormat = errors.New("malformed device tree blob")

// maxDepth bounds node nesting so a hostile blob cannot recurse without end.
const maxDepth = 64

// Tree is a parsed blob: the header fields a reader may care about, the
// memory reservations in blob order (the terminator left out) and the
// root node, whose Name is "".
type Tree struct {
	Version, LastCompVersion uint32
	BootCPU                  uint32 // boot_cpuid_phys: the boot CPU's reg
	Reservations             []Reservation
	Root                     *Node
}

// Node is one device tree node. Props and Children keep blob order.
type Node struct {
	Name     string
	Props    []Property
	Children []*Node
}

// Property is a named value. Value aliases nothing: Parse copies it.
type Property struct {
	Name  string
	Value []byte
}

// formatErr builds an error that wraps ErrFormat, so callers tell a bad
// blob from other failures with errors.Is.
func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// Parse decodes a version 16 or 17 blob. Every offset and length is checked
// against the blob, so a corrupt blob gives an error, never a panic or an
// allocation larger than the input.
func Parse(blob []byte) (*Tree, error) {
	if len(blob) < headerSize {
		return nil, formatErr("blob of %d bytes is shorter than the header", len(blob))
	}
	h := func(i int) uint32 { return binary.BigEndian.Uint32(blob[4*i:]) }
	if h(0) != Magic {
		return nil, formatErr("bad magic %#x", h(0))
	}
	total, offStruct, offStrings, offRsv := h(1), h(2), h(3), h(4)
	t := &Tree{Version: h(5), LastCompVersion: h(6), BootCPU: h(7)}
	sizeStrings, sizeStruct := h(8), h(9)
	// A blob is readable by a version-17 parser when its
	// last_comp_version is at most 17 (spec 5.1); before 16 the node
	// names were full paths, a layout this parser does not take.
	if t.LastCompVersion > 17 || t.Version < 16 {
		return nil, formatErr("unsupported version %d (last compatible %d)", t.Version, t.LastCompVersion)
	}
	if uint64(total) > uint64(len(blob)) || total < headerSize {
		return nil, formatErr("totalsize %d but blob has %d bytes", total, len(blob))
	}
	blob = blob[:total]
	inBlob := func(off, size uint32) bool { return uint64(off)+uint64(size) <= uint64(total) }
	if !inBlob(offStruct, sizeStruct) || !inBlob(offStrings, sizeStrings) || !inBlob(offRsv, 0) {
		return nil, formatErr("block outside the blob")
	}
	if offRsv%8 != 0 || offStruct%4 != 0 {
		return nil, formatErr("misaligned block")
	}
	// The reservation block has no size field: it runs up to an entry
	// with address and size both 0 (spec 5.3.2).
	for off := uint64(offRsv); ; off += 16 {
		if off+16 > uint64(total) {
			return nil, formatErr("unterminated memory reservation block")
		}
		addr := binary.BigEndian.Uint64(blob[off:])
		size := binary.BigEndian.Uint64(blob[off+8:])
		if addr == 0 && size == 0 {
			break
		}
		t.Reservations = append(t.Reservations, Reservation{addr, size})
	}
	p := parser{s: blob[offStruct : offStruct+sizeStruct], strs: blob[offStrings : offStrings+sizeStrings]}
	root, err := p.tree()
	if err != nil {
		return nil, err
	}
	t.Root = root
	return t, nil
}

// parser walks the structure block. pos is always 4-byte aligned between
// tokens; every read is checked against len(s), so no blob can make it
// read outside the block it was given.
type parser struct {
	s    []byte // structure block
	pos  int    // offset in s of the next token
	strs []byte // strings block
}

// u32 reads the next big-endian word of the structure block.
func (p *parser) u32() (uint32, error) {
	if p.pos+4 > len(p.s) {
		return 0, formatErr("structure block truncated at %#x", p.pos)
	}
	v := binary.BigEndian.Uint32(p.s[p.pos:])
	p.pos += 4
	return v, nil
}

// token returns the next token, skipping FDT_NOP.
func (p *parser) token() (uint32, error) {
	for {
		tok, err := p.u32()
		if err != nil || tok != tokenNop {
			return tok, err
		}
	}
}

// align4 skips the padding after a name or a value (spec 5.4.1).
func (p *parser) align4() { p.pos = (p.pos + 3) &^ 3 }

// tree parses the whole structure block: one root node, then FDT_END
// (spec 5.4.2); anything but NOPs between them is an error.
func (p *parser) tree() (*Node, error) {
	tok, err := p.token()
	if err != nil {
		return nil, err
	}
	if tok != tokenBeginNode {
		return nil, formatErr("structure block starts with token %#x", tok)
	}
	root, err := p.node(0)
	if err != nil {
		return nil, err
	}
	if tok, err = p.token(); err != nil {
		return nil, err
	}
	if tok != tokenEnd {
		return nil, formatErr("token %#x after the root node", tok)
	}
	return root, nil
}

// node parses after an FDT_BEGIN_NODE token up to its FDT_END_NODE.
func (p *parser) node(depth int) (*Node, error) {
	if depth >= maxDepth {
		return nil, formatErr("nodes nested deeper than %d", maxDepth)
	}
	end := bytes.IndexByte(p.s[p.pos:], 0)
	if end < 0 {
		return nil, formatErr("unterminated node name at %#x", p.pos)
	}
	n := &Node{Name: string(p.s[p.pos : p.pos+end])}
	p.pos += end + 1
	p.align4()
	for {
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		switch tok {
		case tokenProp:
			if len(n.Children) > 0 {
				return nil, formatErr("node %q: property after a child node", n.Name)
			}
			prop, err := p.prop()
			if err != nil {
				return nil, fmt.Errorf("node %q: %w", n.Name, err)
			}
			n.Props = append(n.Props, prop)
		case tokenBeginNode:
			c, err := p.node(depth + 1)
			if err != nil {
				return nil, err
			}
			n.Children = append(n.Children, c)
		case tokenEndNode:
			return n, nil
		default:
			return nil, formatErr("node %q: unexpected token %#x", n.Name, tok)
		}
	}
}

// prop parses after an FDT_PROP token: len, nameoff, the value. The
// value is copied, so the Tree does not keep the blob alive.
func (p *parser) prop() (Property, error) {
	size, err := p.u32()
	if err != nil {
		return Property{}, err
	}
	nameOff, err := p.u32()
	if err != nil {
		return Property{}, err
	}
	if uint64(size) > uint64(len(p.s)-p.pos) {
		return Property{}, formatErr("property value of %d bytes overruns the structure block", size)
	}
	if uint64(nameOff) >= uint64(len(p.strs)) {
		return Property{}, formatErr("property name offset %#x outside the strings block", nameOff)
	}
	nameEnd := bytes.IndexByte(p.strs[nameOff:], 0)
	if nameEnd < 0 {
		return Property{}, formatErr("unterminated property name at %#x", nameOff)
	}
	prop := Property{
		Name:  string(p.strs[nameOff : int(nameOff)+nameEnd]),
		Value: bytes.Clone(p.s[p.pos : p.pos+int(size)]),
	}
	p.pos += int(size)
	p.align4()
	return prop, nil
}

// Child returns the direct child with the given full name (with unit address).
func (n *Node) Child(name string) *Node {
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Lookup finds a node by absolute path such as "/vdevice/vty@71000000".
func (t *Tree) Lookup(path string) *Node {
	n := t.Root
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" {
			continue
		}
		if n = n.Child(part); n == nil {
			return nil
		}
	}
	return n
}

// Prop returns the value of the named property.
func (n *Node) Prop(name string) ([]byte, bool) {
	for _, p := range n.Props {
		if p.Name == name {
			return p.Value, true
		}
	}
	return nil, false
}

// PropU32s decodes the property as big-endian 32-bit cells.
func (n *Node) PropU32s(name string) ([]uint32, error) {
	v, ok := n.Prop(name)
	if !ok {
		return nil, fmt.Errorf("node %q has no property %q", n.Name, name)
	}
	if len(v)%4 != 0 {
		return nil, fmt.Errorf("property %q: %d bytes is not whole cells", name, len(v))
	}
	cells := make([]uint32, len(v)/4)
	for i := range cells {
		cells[i] = binary.BigEndian.Uint32(v[4*i:])
	}
	return cells, nil
}

// PropStrings decodes the property as a list of NUL-terminated strings.
func (n *Node) PropStrings(name string) ([]string, error) {
	v, ok := n.Prop(name)
	if !ok {
		return nil, fmt.Errorf("node %q has no property %q", n.Name, name)
	}
	if len(v) == 0 || v[len(v)-1] != 0 {
		return nil, fmt.Errorf("property %q is not NUL-terminated strings", name)
	}
	return strings.Split(string(v[:len(v)-1]), "\x00"), nil
}
