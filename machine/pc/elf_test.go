//go:build amd64

package pc

import (
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
