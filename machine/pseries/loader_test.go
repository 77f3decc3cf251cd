package pseries

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/petrel-vmm/petrel/firmware/fdt"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

type seg struct {
	vaddr, paddr uint64
	data         []byte
	memsz        uint64
}

// makeELF builds a minimal ELF64 executable with PT_LOAD segments, in the
// given byte order, as a ppc64 vmlinux is laid out.
func makeELF(order binary.ByteOrder, machine uint16, entry uint64, segs ...seg) []byte {
	const ehsize, phsize = 64, 56
	var b bytes.Buffer
	data := byte(2) // ELFDATA2MSB
	if order == binary.LittleEndian {
		data = 1
	}
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, data, 1, 0})
	b.Write(make([]byte, 8))
	w := func(v any) { binary.Write(&b, order, v) }
	w(uint16(2)) // ET_EXEC
	w(machine)
	w(uint32(1))
	w(entry)
	w(uint64(ehsize)) // phoff
	w(uint64(0))      // shoff
	w(uint32(0))      // flags
	w(uint16(ehsize))
	w(uint16(phsize))
	w(uint16(len(segs)))
	w(uint16(64)) // shentsize
	w(uint16(0))
	w(uint16(0))
	off := uint64(ehsize + phsize*len(segs))
	for _, s := range segs {
		w(uint32(1)) // PT_LOAD
		w(uint32(7))
		w(off)
		w(s.vaddr)
		w(s.paddr)
		w(uint64(len(s.data)))
		w(s.memsz)
		w(uint64(0x10000))
		off += uint64(len(s.data))
	}
	for _, s := range segs {
		b.Write(s.data)
	}
	return b.Bytes()
}

func newMem(t *testing.T, size int) (*guestmem.Memory, []byte) {
	mem := guestmem.New()
	ram := make([]byte, size)
	if err := mem.Add(0, ram); err != nil {
		t.Fatal(err)
	}
	return mem, ram
}

func TestLoadKernelELF(t *testing.T) {
	for _, order := range []binary.ByteOrder{binary.BigEndian, binary.LittleEndian} {
		mem, ram := newMem(t, 1<<20)
		for i := range ram {
			ram[i] = 0xaa // bss must be cleared
		}
		img := makeELF(order, elfMachinePPC64, 0xc000000000000100,
			seg{0xc000000000000000, 0, []byte("TEXT-SEGMENT"), 0x100},
			seg{0xc000000000010000, 0x10000, []byte("DATA"), 0x2000})
		entry, end, le, err := LoadKernel(mem, img)
		if err != nil {
			t.Fatal(err)
		}
		if entry != 0x100 || end != 0x12000 || le != (order == binary.LittleEndian) {
			t.Fatalf("%v: entry %#x end %#x le %v", order, entry, end, le)
		}
		if string(ram[:12]) != "TEXT-SEGMENT" || string(ram[0x10000:0x10004]) != "DATA" {
			t.Fatal("segments not loaded")
		}
		if !bytes.Equal(ram[12:0x100], make([]byte, 0x100-12)) || !bytes.Equal(ram[0x10004:0x12000], make([]byte, 0x2000-4)) {
			t.Fatal("bss not cleared")
		}
		if ram[0x100] != 0xaa || ram[0x12000] != 0xaa {
			t.Fatal("loader wrote outside the segments")
		}
	}
}

func TestLoadKernelFlat(t *testing.T) {
	mem, ram := newMem(t, 1<<20)
	entry, end, _, err := LoadKernel(mem, []byte{0x48, 0, 0, 0})
	if err != nil || entry != 0 || end != 4 || ram[0] != 0x48 {
		t.Fatalf("flat image: %v %#x %#x", err, entry, end)
	}
	if _, _, _, err := LoadKernel(mem, make([]byte, 2<<20)); !errors.Is(err, ErrKernel) {
		t.Fatalf("oversized flat image: %v", err)
	}
}

func TestLoadKernelRejects(t *testing.T) {
	mem, _ := newMem(t, 1<<20)
	good := makeELF(binary.BigEndian, elfMachinePPC64, 0, seg{0, 0, []byte("x"), 0x10})
	cases := map[string][]byte{
		"x86-64 ELF":         makeELF(binary.LittleEndian, 62, 0, seg{0, 0, []byte("x"), 0x10}),
		"segment past RAM":   makeELF(binary.BigEndian, elfMachinePPC64, 0, seg{0, 0xff000, []byte("x"), 0x2000}),
		"filesz > memsz":     makeELF(binary.BigEndian, elfMachinePPC64, 0, seg{0, 0, []byte("xyz"), 1}),
		"no PT_LOAD":         makeELF(binary.BigEndian, elfMachinePPC64, 0),
		"truncated":          good[:70],
		"huge memsz":         makeELF(binary.BigEndian, elfMachinePPC64, 0, seg{0, 0, []byte("x"), 1 << 62}),
		"file data past end": append(bytes.Clone(good[:len(good)-1]), []byte{}...),
	}
	for name, img := range cases {
		if _, _, _, err := LoadKernel(mem, img); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestBootLayout(t *testing.T) {
	mem, ram := newMem(t, 64<<20)
	m, err := New(mem, Options{CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	kernel := makeELF(binary.LittleEndian, elfMachinePPC64, 0xc000000000000000, seg{0xc000000000000000, 0, []byte("kernel"), 0x100000})
	initrd := bytes.Repeat([]byte("initrd"), 1000)
	l, err := m.Boot(kernel, initrd, "console=hvc0", 19)
	if err != nil {
		t.Fatal(err)
	}
	if l.Entry != 0 || l.InitrdStart != initrdLoadAddr || l.InitrdEnd != initrdLoadAddr+uint64(len(initrd)) || !l.LittleEndian {
		t.Fatalf("layout %+v", l)
	}
	if l.FDT != 64<<20-fdtMaxSize || l.RTAS != l.FDT-rtasRegionSize {
		t.Fatalf("FDT %#x RTAS %#x", l.FDT, l.RTAS)
	}
	if !bytes.Equal(ram[l.RTAS:l.RTAS+20], RTASStub()) || binary.BigEndian.Uint32(ram[l.RTAS+12:]) != 0x44000022 {
		t.Fatal("RTAS stub missing or not big-endian (sc 1 at +12)")
	}
	if !bytes.Equal(ram[l.InitrdStart:l.InitrdEnd], initrd) {
		t.Fatal("initrd not loaded")
	}
	tr, err := fdt.Parse(ram[l.FDT : l.FDT+fdtMaxSize])
	if err != nil {
		t.Fatal(err)
	}
	base, _ := tr.Lookup("/rtas").PropU32s("linux,rtas-base")
	start, _ := tr.Lookup("/chosen").PropU32s("linux,initrd-start")
	if uint64(base[0]) != l.RTAS || start[1] != initrdLoadAddr {
		t.Fatalf("tree names RTAS %#x initrd %#x", base, start)
	}
	// A kernel reaching the initrd load address pushes the initrd up.
	big := makeELF(binary.BigEndian, elfMachinePPC64, 0, seg{0, 0, []byte("k"), initrdLoadAddr + 5})
	if l, err = m.Boot(big, initrd, "", 19); err != nil || l.InitrdStart != initrdLoadAddr+loadAlign {
		t.Fatalf("initrd after a big kernel: %+v %v", l, err)
	}
	// Too much to fit below RTAS.
	if _, err := m.Boot(big, make([]byte, 64<<20), "", 19); err == nil {
		t.Fatal("an initrd larger than RAM was accepted")
	}
	small, _ := newMem(t, 1<<20)
	ms, _ := New(small, Options{CPUs: 1})
	if _, err := ms.Boot(kernel, nil, "", 18); err == nil {
		t.Fatal("1 MiB of RAM accepted")
	}
}
