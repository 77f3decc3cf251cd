//go:build amd64

package pc

import "encoding/binary"

// fakeBzImage builds a minimal bzImage (boot protocol 2.15, 64-bit entry)
// whose protected-mode code is pm; the 64-bit entry is pm[0x200:].
func fakeBzImage(pm []byte) []byte {
	le := binary.LittleEndian
	const setup = 2 * 512 // setup_sects = 1
	b := make([]byte, setup+len(pm))
	b[0x1f1] = 1
	le.PutUint16(b[0x1fe:], 0xaa55)
	b[0x200], b[0x201] = 0xeb, 0x66 // jump over the header: it ends at 0x268
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], 0x020f)
	b[0x211] = 1 // LOADED_HIGH
	le.PutUint32(b[0x214:], 0x100000)
	le.PutUint32(b[0x22c:], 0x37ffffff) // initrd_addr_max
	le.PutUint32(b[0x230:], 0x200000)
	le.PutUint16(b[0x236:], 1) // XLF_KERNEL_64
	le.PutUint32(b[0x238:], 2047)
	// Payload: the last 8 bytes of pm (a fake, never decompressed).
	le.PutUint32(b[0x248:], uint32(len(pm)-8))
	le.PutUint32(b[0x24c:], 8)
	le.PutUint32(b[0x260:], uint32(len(pm))+0x10000) // init_size
	copy(b[setup:], pm)
	return b
}

// longModeCmdlineGuest is 64-bit code that prints the command line found
// through boot_params (rsi) on COM1 and powers off through ACPI.
var longModeCmdlineGuest = []byte{
	0x8b, 0xbe, 0x28, 0x02, 0x00, 0x00, // mov edi, [rsi+0x228] (cmd_line_ptr)
	0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
	0x8a, 0x07, // loop: mov al, [rdi]
	0x84, 0xc0, // test al, al
	0x74, 0x06, // jz done
	0xee,             // out dx, al
	0x48, 0xff, 0xc7, // inc rdi
	0xeb, 0xf4, // jmp loop
	0x66, 0xba, 0x04, 0x06, // done: mov dx, 0x604
	0x66, 0xb8, 0x00, 0x34, // mov ax, 0x3400
	0x66, 0xef, // out dx, ax
	0xf4, // hlt
}

func longModePM() []byte {
	pm := make([]byte, 0x200, 0x400)
	for i := range pm {
		pm[i] = 0xf4 // the 32-bit entry is never used
	}
	pm = append(pm, longModeCmdlineGuest...)
	return append(pm, make([]byte, 16)...)
}
