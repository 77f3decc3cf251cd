//go:build amd64

package pc

import (
	"encoding/binary"
	"testing"
)

// elfWithNote builds a minimal ELF64 with one PT_NOTE holding a note of the
// given name.
func elfWithNote(name string) []byte {
	le := binary.LittleEndian
	b := make([]byte, 0x200)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)
	le.PutUint16(b[18:], 62)
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[32:], 64)
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], 1)
	ph := b[64:]
	le.PutUint32(ph, 4) // PT_NOTE
	le.PutUint64(ph[8:], 0x100)
	n := b[0x100:]
	le.PutUint32(n, uint32(len(name)+1))
	le.PutUint32(n[4:], 4)
	le.PutUint32(n[8:], 18)
	copy(n[12:], name)
	sz := 12 + align4(uint64(len(name)+1)) + 4
	le.PutUint64(ph[32:], sz)
	le.PutUint64(ph[40:], sz)
	return b
}

func TestWithNoXsave(t *testing.T) {
	bz := make([]byte, 0x300)
	copy(bz[0x202:], "HdrS")
	linuxELF := elfWithNote("Linux")
	xenOnly := elfWithNote("Xen")
	for _, tc := range []struct {
		name      string
		cmdline   string
		kernel    []byte
		overrides []string
		want      string
	}{
		{"bzImage on kvm_pvm", "console=ttyS0", bz, []string{"xsave", "avx"}, "console=ttyS0 noxsave"},
		{"vmlinux on kvm_pvm", "", linuxELF, []string{"xsave"}, "noxsave"},
		{"already there", "noxsave console=ttyS0", bz, []string{"xsave"}, "noxsave console=ttyS0"},
		{"host honours the filter", "console=ttyS0", bz, nil, "console=ttyS0"},
		{"not Linux", "x=1", xenOnly, []string{"xsave"}, "x=1"},
		{"garbage kernel", "x=1", []byte("junk"), []string{"xsave"}, "x=1"},
	} {
		got, _ := withNoXsave(tc.cmdline, tc.kernel, tc.overrides)
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
