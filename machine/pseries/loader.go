package pseries

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// Guest memory layout at boot (the choices QEMU's spapr.c makes without
// SLOF): the kernel at 0, the initrd at 40 MiB when the kernel ends below
// it, and the device tree and RTAS at the top of the real mode area,
// which must hold everything the kernel touches before its MMU is on.
const (
	rmaMax         = 256 << 20
	initrdLoadAddr = 0x0280_0000
	fdtMaxSize     = 1 << 20
	rtasRegionSize = 64 << 10
	loadAlign      = 64 << 10
)

// rtasStub is the whole RTAS "firmware": the kernel calls it in
// big-endian real mode with r3 = the parameter block, and it hands the
// block to the hypervisor (QEMU's spapr-rtas.S does the same):
//
//	mr   r4,r3
//	lis  r3,H_RTAS@h
//	ori  r3,r3,H_RTAS@l
//	sc   1
//	blr
var rtasStub = []uint32{0x7c641b78, 0x3c600000, 0x6063f000, 0x44000022, 0x4e800020}

// RTASStub returns the stub's bytes (big-endian instructions).
func RTASStub() []byte {
	b := make([]byte, 0, 4*len(rtasStub))
	for _, insn := range rtasStub {
		b = binary.BigEndian.AppendUint32(b, insn)
	}
	return b
}

// Layout says where boot placed everything.
type Layout struct {
	Entry                  uint64 // kernel entry (real address)
	KernelEnd              uint64
	InitrdStart, InitrdEnd uint64 // equal when there is no initrd
	FDT                    uint64
	RTAS                   uint64
	LittleEndian           bool // the kernel ELF is little-endian
}

// ErrKernel is wrapped by kernel image errors.
var ErrKernel = errors.New("bad kernel image")

// elfMachinePPC64 is EM_PPC64.
const elfMachinePPC64 = 21

// LoadKernel copies a kernel into guest memory: a 64-bit PowerPC ELF
// (vmlinux; its PT_LOAD segments go to their physical addresses with the
// top four bits dropped, as real mode sees them) or, if the image is not
// ELF, a flat binary loaded at 0 and entered at 0.
func LoadKernel(mem *guestmem.Memory, image []byte) (entry, end uint64, le bool, err error) {
	if !bytes.HasPrefix(image, []byte(elf.ELFMAG)) {
		if err := mem.Write(0, image); err != nil {
			return 0, 0, false, fmt.Errorf("%w: flat image of %d bytes does not fit in RAM: %v", ErrKernel, len(image), err)
		}
		return 0, uint64(len(image)), false, nil
	}
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return 0, 0, false, fmt.Errorf("%w: %v", ErrKernel, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elfMachinePPC64 {
		return 0, 0, false, fmt.Errorf("%w: %v %v, want a 64-bit PowerPC ELF", ErrKernel, f.Class, f.Machine)
	}
	loaded := false
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if p.Filesz > p.Memsz || p.Off > uint64(len(image)) || p.Filesz > uint64(len(image))-p.Off {
			return 0, 0, false, fmt.Errorf("%w: segment %d: file range %#x+%#x, memory size %#x", ErrKernel, i, p.Off, p.Filesz, p.Memsz)
		}
		pa := physToReal(p.Paddr)
		dst, err := mem.Slice(pa, p.Memsz)
		if err != nil {
			return 0, 0, false, fmt.Errorf("%w: segment %d at %#x+%#x: %v", ErrKernel, i, pa, p.Memsz, err)
		}
		n := copy(dst, image[p.Off:p.Off+p.Filesz])
		clear(dst[n:])
		end = max(end, pa+p.Memsz)
		loaded = true
	}
	if !loaded {
		return 0, 0, false, fmt.Errorf("%w: no loadable segment", ErrKernel)
	}
	return physToReal(f.Entry), end, f.Data == elf.ELFDATA2LSB, nil
}

// Boot lays out guest memory for booting: the kernel, the optional initrd,
// the RTAS stub and the device tree (built last, so it names the others).
// r3 at entry is Layout.FDT, as the kernel's flattened-tree entry expects.
func (m *Machine) Boot(kernel, initrd []byte, cmdline string, htabShift uint32) (Layout, error) {
	var l Layout
	regions := m.mem.Regions()
	if len(regions) == 0 || regions[0].GPA != 0 {
		return l, fmt.Errorf("pseries boot: guest RAM must start at 0")
	}
	rma := min(uint64(len(regions[0].Host)), rmaMax)
	if rma < fdtMaxSize+rtasRegionSize+loadAlign {
		return l, fmt.Errorf("pseries boot: %d bytes of real mode memory is too little", rma)
	}
	l.FDT = rma - fdtMaxSize
	l.RTAS = l.FDT - rtasRegionSize
	var err error
	l.Entry, l.KernelEnd, l.LittleEndian, err = LoadKernel(m.mem, kernel)
	if err != nil {
		return l, err
	}
	if l.KernelEnd > l.RTAS {
		return l, fmt.Errorf("pseries boot: kernel ends at %#x, over RTAS at %#x", l.KernelEnd, l.RTAS)
	}
	l.InitrdStart, l.InitrdEnd = l.KernelEnd, l.KernelEnd
	if len(initrd) > 0 {
		start := uint64(initrdLoadAddr)
		if l.KernelEnd > start {
			start = (l.KernelEnd + loadAlign - 1) &^ (loadAlign - 1)
		}
		if start+uint64(len(initrd)) > l.RTAS {
			return l, fmt.Errorf("pseries boot: initrd of %d bytes does not fit below %#x", len(initrd), l.RTAS)
		}
		if err := m.mem.Write(start, initrd); err != nil {
			return l, fmt.Errorf("loading initrd: %w", err)
		}
		l.InitrdStart, l.InitrdEnd = start, start+uint64(len(initrd))
	}
	stub := RTASStub()
	if err := m.mem.Write(l.RTAS, stub); err != nil {
		return l, fmt.Errorf("loading RTAS stub: %w", err)
	}
	blob, err := m.DeviceTree(Boot{
		Cmdline:     cmdline,
		InitrdStart: l.InitrdStart,
		InitrdEnd:   l.InitrdEnd,
		RTASBase:    l.RTAS,
		RTASSize:    uint32(len(stub)),
		HTABShift:   htabShift,
	})
	if err != nil {
		return l, err
	}
	if len(blob) > fdtMaxSize {
		return l, fmt.Errorf("pseries boot: device tree of %d bytes exceeds %d", len(blob), fdtMaxSize)
	}
	if err := m.mem.Write(l.FDT, blob); err != nil {
		return l, fmt.Errorf("loading device tree: %w", err)
	}
	return l, nil
}
