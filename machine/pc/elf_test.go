//go:build amd64

package pc

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestParseELFErrors(t *testing.T) {
	good := pvhELF([]byte{0xf4}, 0x100000)
	if segs, err := parseELF(good); err != nil || len(segs) != 1 || segs[0].Paddr != 0x100000 {
		t.Fatalf("good ELF: %+v, %v", segs, err)
	}
	mut := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	le := binary.LittleEndian
	for name, b := range map[string][]byte{
		"short":           good[:40],
		"32-bit":          mut(func(b []byte) { b[4] = 1 }),
		"arm":             mut(func(b []byte) { le.PutUint16(b[18:], 183) }),
		"phoff beyond":    mut(func(b []byte) { le.PutUint64(b[32:], 1<<40) }),
		"phnum huge":      mut(func(b []byte) { le.PutUint16(b[56:], 0xffff) }),
		"filesz > memsz":  mut(func(b []byte) { le.PutUint64(b[64+40:], 0) }),
		"offset beyond":   mut(func(b []byte) { le.PutUint64(b[64+8:], 1<<62) }),
		"paddr wraps":     mut(func(b []byte) { le.PutUint64(b[64+24:], ^uint64(0)) }),
		"no load segment": mut(func(b []byte) { le.PutUint32(b[64:], 0) }),
	} {
		if _, err := parseELF(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzLoadKernel feeds arbitrary kernels (ELF/PVH and bzImage paths) to
// the loaders: errors are fine, panics and writes outside RAM are not.
func FuzzLoadKernel(f *testing.F) {
	f.Add(pvhELF([]byte{0xf4}, 0x100000))
	f.Add(fakeBzImage(longModePM()))
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	e820, _ := e820Map(8 << 20)
	f.Fuzz(func(t *testing.T, k []byte) {
		mem := testMem(t, 8<<20)
		loadKernel(mem, bootInput{kernel: k, initrd: []byte("rd"), cmdline: "x", e820: e820,
			lowEnd: 8 << 20, protocol: BootAuto})
	})
}

// pvhELF32 is pvhELF as an ELF32 i386 file (the PVH ABI allows it), with a
// 4-byte entry in the note.
func pvhELF32(code []byte, loadAddr uint32) []byte {
	le := binary.LittleEndian
	const phoff, phnum, noteOff, codeOff = 52, 2, 0x100, 0x1000
	b := make([]byte, codeOff+len(code))
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 1, 1, 1 // ELFCLASS32, little-endian, version
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 3)    // EM_386
	le.PutUint32(b[20:], 1)
	le.PutUint32(b[24:], loadAddr)
	le.PutUint32(b[28:], phoff)
	le.PutUint16(b[40:], 52)
	le.PutUint16(b[42:], 32)
	le.PutUint16(b[44:], phnum)
	ph := b[phoff:] // PT_LOAD
	le.PutUint32(ph[0:], 1)
	le.PutUint32(ph[4:], codeOff)
	le.PutUint32(ph[8:], loadAddr)
	le.PutUint32(ph[12:], loadAddr)
	le.PutUint32(ph[16:], uint32(len(code)))
	le.PutUint32(ph[20:], uint32(len(code))+0x1000)
	le.PutUint32(ph[24:], 7)
	ph = b[phoff+32:] // PT_NOTE: "Xen", type 18, 4-byte entry
	le.PutUint32(ph[0:], 4)
	le.PutUint32(ph[4:], noteOff)
	le.PutUint32(ph[16:], 20)
	n := b[noteOff:]
	le.PutUint32(n[0:], 4)
	le.PutUint32(n[4:], 4)
	le.PutUint32(n[8:], 18)
	copy(n[12:], "Xen\x00")
	le.PutUint32(n[16:], loadAddr)
	copy(b[codeOff:], code)
	return b
}

// TestPVHBootsELF32: an ELF32 PVH kernel is loaded (segment bytes at its
// physical address, the rest of memsz zeroed) and entered by PVH, not
// refused for lacking an ELF64 note.
func TestPVHBootsELF32(t *testing.T) {
	mem := testMem(t, 16<<20)
	e820, _ := e820Map(16 << 20)
	code := []byte{0xfa, 0xf4, 0xeb, 0xfd}
	b, err := loadKernel(mem, bootInput{kernel: pvhELF32(code, 0x200000), e820: e820, lowEnd: 16 << 20})
	if err != nil {
		t.Fatalf("elf32 pvh kernel: %v", err)
	}
	if b.protocol != BootPVH || b.entry != 0x200000 {
		t.Fatalf("booted by %v at %#x, want pvh at 0x200000", b.protocol, b.entry)
	}
	got, err := mem.Slice(0x200000, uint64(len(code))+0x1000)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(code)], code) || bytes.ContainsFunc(got[len(code):], func(r rune) bool { return r != 0 }) {
		t.Fatal("elf32 segment not loaded as its program header says")
	}
	bad := pvhELF32(code, 0x200000)
	binary.LittleEndian.PutUint16(bad[18:], 62) // ELF32 claiming x86-64
	if _, err := loadKernel(mem, bootInput{kernel: bad, e820: e820, lowEnd: 16 << 20}); err == nil {
		t.Fatal("an ELF32 file for EM_X86_64 was accepted")
	}
}
