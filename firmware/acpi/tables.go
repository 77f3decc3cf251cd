package acpi

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/firmware/aml"
)

// Common table header (ACPI 6.x section 5.2.6).
const headerLen = 36

// Identification written into every table.
const (
	OEMID           = "PETREL"
	OEMTableID      = "PETRELPC"
	OEMRevision     = 1
	CreatorID       = "PTRL"
	CreatorRevision = 1
)

// newTable returns a table of length bytes with its header filled in
// (checksum still zero: call finishTable once the body is complete).
func newTable(sig string, length int, revision byte) []byte {
	t := make([]byte, length)
	copy(t[0:4], sig)
	binary.LittleEndian.PutUint32(t[4:], uint32(length))
	t[8] = revision
	copy(t[10:16], padRight(OEMID, 6))
	copy(t[16:24], padRight(OEMTableID, 8))
	binary.LittleEndian.PutUint32(t[24:], OEMRevision)
	copy(t[28:32], CreatorID)
	binary.LittleEndian.PutUint32(t[32:], CreatorRevision)
	return t
}

// finishTable sets the length from len(t) and the checksum byte (offset 9)
// so that all bytes sum to zero.
func finishTable(t []byte) {
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[9] = 0
	t[9] = -checksum(t)
}

// checksum returns the byte sum of b.
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

func padRight(s string, n int) []byte {
	b := []byte(s)
	for len(b) < n {
		b = append(b, ' ')
	}
	return b[:n]
}

// DefinitionBlock returns a DSDT or SSDT (revision 2: 64-bit integers)
// holding the AML of terms.
func DefinitionBlock(sig string, terms ...aml.Term) ([]byte, error) {
	if sig != "DSDT" && sig != "SSDT" {
		return nil, fmt.Errorf("definition block signature %q is not DSDT or SSDT", sig)
	}
	body, err := aml.Encode(terms...)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", sig, err)
	}
	t := newTable(sig, headerLen, 2)
	t = append(t, body...)
	finishTable(t)
	return t, nil
}

// Generic Address Structure (5.2.3.2).
type gas struct {
	space     byte // 0 system memory, 1 system I/O
	bitWidth  byte
	bitOffset byte
	access    byte // 0 undefined, 1 byte, 2 word, 3 dword, 4 qword
	addr      uint64
}

const gasLen = 12

func (g gas) put(b []byte) {
	b[0], b[1], b[2], b[3] = g.space, g.bitWidth, g.bitOffset, g.access
	binary.LittleEndian.PutUint64(b[4:], g.addr)
}

func ioGAS(port uint16, bytes uint8, access byte) gas {
	return gas{space: 1, bitWidth: bytes * 8, access: access, addr: uint64(port)}
}

// rsdp returns the Root System Description Pointer, revision 2 (5.2.5.3):
// no RSDT, the XSDT at xsdt.
func rsdp(xsdt uint64) []byte {
	const length = 36
	r := make([]byte, length)
	copy(r[0:8], "RSD PTR ")
	copy(r[9:15], padRight(OEMID, 6))
	r[15] = 2 // revision: ACPI 2.0+
	binary.LittleEndian.PutUint32(r[20:], length)
	binary.LittleEndian.PutUint64(r[24:], xsdt)
	r[8] = -checksum(r[:20])  // covers the ACPI 1.0 part
	r[32] = -checksum(r[:36]) // extended checksum, whole structure
	return r
}

// xsdt returns the Extended System Description Table (5.2.8).
func xsdt(entries []uint64) []byte {
	t := newTable("XSDT", headerLen+8*len(entries), 1)
	for i, e := range entries {
		binary.LittleEndian.PutUint64(t[headerLen+8*i:], e)
	}
	finishTable(t)
	return t
}

// facs returns the Firmware ACPI Control Structure (5.2.10), version 2. It
// has no checksum and must be 64-byte aligned.
func facs() []byte {
	f := make([]byte, 64)
	copy(f[0:4], "FACS")
	binary.LittleEndian.PutUint32(f[4:], 64)
	f[32] = 2 // version
	return f
}
