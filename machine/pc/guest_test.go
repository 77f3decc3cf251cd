//go:build amd64

package pc

import "encoding/binary"

// pvhELF wraps 32-bit code in a minimal ELF64 with one PT_LOAD at loadAddr
// and a PT_NOTE carrying the PVH entry note (entry = loadAddr).
func pvhELF(code []byte, loadAddr uint32) []byte {
	le := binary.LittleEndian
	const phoff, phnum, noteOff, codeOff = 64, 2, 0x100, 0x1000
	b := make([]byte, codeOff+len(code))
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little-endian, version
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], uint64(loadAddr))
	le.PutUint64(b[32:], phoff)
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], phnum)
	// PT_LOAD
	ph := b[phoff:]
	le.PutUint32(ph[0:], 1)
	le.PutUint32(ph[4:], 7)
	le.PutUint64(ph[8:], codeOff)
	le.PutUint64(ph[16:], uint64(loadAddr))
	le.PutUint64(ph[24:], uint64(loadAddr))
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code))+0x1000)
	// PT_NOTE: "Xen", type 18, 8-byte entry.
	ph = b[phoff+56:]
	le.PutUint32(ph[0:], 4)
	le.PutUint64(ph[8:], noteOff)
	le.PutUint64(ph[32:], 24)
	n := b[noteOff:]
	le.PutUint32(n[0:], 4)
	le.PutUint32(n[4:], 8)
	le.PutUint32(n[8:], 18)
	copy(n[12:], "Xen\x00")
	le.PutUint64(n[16:], uint64(loadAddr))
	copy(b[codeOff:], code)
	return b
}

// Snippets of 32-bit code for test guests.
var (
	// outByte: mov dx, 0x3f8; mov al, c; out dx, al
	outCOM1 = func(c byte) []byte { return []byte{0x66, 0xba, 0xf8, 0x03, 0xb0, c, 0xee} }
	// acpiPowerOff: mov dx, 0x604; mov ax, 0x3400 (SLP_TYP 5 | SLP_EN); out dx, ax
	acpiPowerOff = []byte{0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x34, 0x66, 0xef}
	hlt          = []byte{0xf4}
)

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}
