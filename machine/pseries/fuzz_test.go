package pseries

import (
	"encoding/binary"
	"testing"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// FuzzRTAS runs H_RTAS on a guest-controlled parameter block: any block
// must give H_SUCCESS or H_PARAMETER and never panic; on H_PARAMETER for
// a block that is not fully in RAM nothing may be written.
func FuzzRTAS(f *testing.F) {
	seed := func(tok, nargs, nret uint32, args ...uint32) []byte {
		b := make([]byte, 12+4*len(args))
		binary.BigEndian.PutUint32(b, tok)
		binary.BigEndian.PutUint32(b[4:], nargs)
		binary.BigEndian.PutUint32(b[8:], nret)
		for i, a := range args {
			binary.BigEndian.PutUint32(b[12+4*i:], a)
		}
		return b
	}
	for _, name := range RTASServiceNames() {
		tok, _ := RTASToken(name)
		f.Add(seed(tok, 3, 2, 0, 0x100, 16, 0, 0), uint16(0))
	}
	f.Add(seed(0xa, 1, 1, 'x', 0), uint16(0xfff0))
	f.Add(seed(0x2001, 0, 8), uint16(0xffe0))
	f.Fuzz(func(t *testing.T, block []byte, at uint16) {
		mem := guestmem.New()
		ram := make([]byte, 64<<10)
		mem.Add(0, ram)
		copy(ram[at:], block)
		m, err := New(mem, Options{CPUs: 2})
		if err != nil {
			t.Fatal(err)
		}
		ret := m.Hypercall(m.cpus[0], HRTAS, &[9]uint64{uint64(at)})
		if ret != HSuccess && ret != HParameter {
			t.Fatalf("H_RTAS returned %d", ret)
		}
	})
}

// FuzzHypercall drives every hypercall number range with arbitrary
// registers against a small guest memory: no panic, and the result is a
// PAPR return code.
func FuzzHypercall(f *testing.F) {
	for _, nr := range []uint64{HRTAS, HLogicalMemop, HPutTermChar, HGetTermChar, HLogicalCILoad, HLogicalCIStore, HSetMode, HProd, 0x8} {
		f.Add(nr, uint64(0x100), uint64(0x200), uint64(3), uint64(4), uint64(1))
	}
	f.Fuzz(func(t *testing.T, nr, a0, a1, a2, a3, a4 uint64) {
		if nr == HCede {
			return // waits up to cedeMax: covered by its own test
		}
		mem := guestmem.New()
		mem.Add(0, make([]byte, 64<<10))
		m, err := New(mem, Options{CPUs: 2})
		if err != nil {
			t.Fatal(err)
		}
		args := [9]uint64{a0, a1, a2, a3, a4}
		ret := m.Hypercall(m.cpus[0], nr, &args)
		if ret > 0 || ret < HUnsupportedFlag {
			t.Fatalf("hcall %#x returned %d", nr, ret)
		}
	})
}

// FuzzLoadKernel feeds arbitrary images to the kernel loader.
func FuzzLoadKernel(f *testing.F) {
	f.Add(makeELF(binary.BigEndian, elfMachinePPC64, 0, seg{0, 0, []byte("x"), 0x10}))
	f.Add(makeELF(binary.LittleEndian, elfMachinePPC64, 0xc000000000000000, seg{0xc000000000000000, 0, []byte("abc"), 0x1000}))
	f.Add([]byte{0x7f, 'E', 'L', 'F'})
	f.Fuzz(func(t *testing.T, img []byte) {
		mem := guestmem.New()
		mem.Add(0, make([]byte, 1<<20))
		entry, end, _, err := LoadKernel(mem, img)
		if err == nil && end > 1<<20 {
			t.Fatalf("loaded to %#x past RAM (entry %#x)", end, entry)
		}
	})
}
