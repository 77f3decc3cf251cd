//go:build amd64

package pc

import (
	"encoding/binary"
	"testing"
)

// movToMem is "mov dword [addr], val".
func movToMem(addr, val uint32) []byte {
	b := []byte{0xc7, 0x05, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[2:], addr)
	binary.LittleEndian.PutUint32(b[6:], val)
	return b
}

// TestAPStartsBySIPI: the BSP wakes vCPU 1 with INIT-SIPI-SIPI through the
// in-kernel LAPIC; the AP runs real-mode code at the SIPI vector, prints
// 'A' and sets a flag the BSP waits for before printing 'B' and powering
// off. This is how an SMP guest brings up its CPUs.
func TestAPStartsBySIPI(t *testing.T) {
	// Real mode at 0x8000: mov dx, 0x3f8; mov al, 'A'; out dx, al;
	// mov byte [0x9000], 1; hlt; jmp $-2.
	ap := []byte{0xba, 0xf8, 0x03, 0xb0, 'A', 0xee, 0xc6, 0x06, 0x00, 0x90, 0x01, 0xf4, 0xeb, 0xfd}
	bsp := concat(
		[]byte{0xbe}, le32(0x100200), []byte{0xbf}, le32(0x8000), []byte{0xb9}, le32(uint32(len(ap))),
		[]byte{0xfc, 0xf3, 0xa4},         // cld; rep movsb: the AP code to 0x8000
		movToMem(0xfee000f0, 0x1ff),      // LAPIC software enable
		movToMem(0xfee00310, 0x01000000), // ICR destination: APIC 1
		movToMem(0xfee00300, 0x4500),     // INIT
		movToMem(0xfee00300, 0x4608),     // SIPI, vector 0x08 -> 0x8000
		movToMem(0xfee00300, 0x4608),     // second SIPI, as the MP spec says
	)
	spin := len(bsp)
	bsp = append(bsp, 0x80, 0x3d, 0x00, 0x90, 0x00, 0x00, 0x01) // cmp byte [0x9000], 1
	bsp = append(bsp, 0x75, byte(spin-(len(bsp)+2)))            // jne spin
	bsp = concat(bsp, outCOM1('B'), acpiPowerOff, hlt)
	code := append(bsp, make([]byte, 0x200-len(bsp))...)
	code = append(code, ap...)
	r, out, err := runGuest(t, Config{CPUs: 2, KernelBytes: pvhELF(code, 0x100000)})
	if err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v (serial %q)", r, err, out)
	}
	if out != "AB" {
		t.Fatalf("serial %q, want AB (AP first, then the BSP)", out)
	}
}
