//go:build amd64

package pc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/petrel-vmm/petrel/firmware/bzimage"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// BootProtocol selects how a kernel is entered.
type BootProtocol int

const (
	// BootAuto: PVH for an ELF with the PVH note, and for a bzImage whose
	// payload carries one (decompressed on the host, cached); otherwise the
	// Linux 64-bit boot protocol.
	BootAuto BootProtocol = iota
	// BootPVH forces PVH (32-bit protected mode, paging off, ebx=hvm_start_info).
	BootPVH
	// BootLinux64 forces the bzImage 64-bit boot protocol.
	BootLinux64
)

func (p BootProtocol) String() string {
	switch p {
	case BootPVH:
		return "pvh"
	case BootLinux64:
		return "linux64"
	}
	return "auto"
}

// bootInfo is what a loader tells the vCPU setup.
type bootInfo struct {
	protocol BootProtocol
	entry    uint64 // 32-bit PVH entry or 64-bit kernel entry
	param    uint64 // ebx (start_info) for PVH, rsi (boot_params) for Linux
	// whyNotPVH says why BootAuto took the 64-bit protocol.
	whyNotPVH error
}

// bootInput is the kernel, initrd and platform data a loader places.
type bootInput struct {
	kernel   []byte
	initrd   []byte
	cmdline  string
	e820     []E820Entry
	rsdp     uint64
	lowEnd   uint64 // end of RAM below 4 GiB
	protocol BootProtocol
	cacheDir string
	// kernelPath lets BootAuto use the decompressed-kernel cache.
	kernelPath string
	// kernelHead: kernel holds only the first bytes of the bzImage at
	// kernelPath (readKernelHead). The PVH path needs no more (the
	// decompressed vmlinux comes from the cache as a file); the 64-bit
	// protocol reads the whole file.
	kernelHead bool
}

// pvhNoteEntry finds XEN_ELFNOTE_PHYS32_ENTRY in an ELF image.
func pvhNoteEntry(elfData []byte) (uint32, bool) { return bzimage.FindPVHEntry(elfData) }

// loadKernel places the kernel per in.protocol and returns the entry state.
func loadKernel(mem *guestmem.Memory, in bootInput) (bootInfo, error) {
	isELF := len(in.kernel) >= 4 && string(in.kernel[:4]) == "\x7fELF"
	if isELF {
		if in.protocol == BootLinux64 {
			return bootInfo{}, errors.New("the 64-bit boot protocol needs a bzImage, not an ELF")
		}
		entry, ok := pvhNoteEntry(in.kernel)
		if !ok {
			return bootInfo{}, fmt.Errorf("elf kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): %w", bzimage.ErrNoPVH)
		}
		return loadPVH(mem, in, in.kernel, entry)
	}
	var err error
	if in.protocol != BootLinux64 && in.kernelPath != "" && bzimage.HasSetupHeader(in.kernel) {
		// The decompressed vmlinux comes from the cache as a file and is
		// copied segment by segment into guest RAM, so the VMM never
		// holds it (tens of MiB) in its own memory, nor the bzImage.
		var f *os.File
		var entry uint32
		if f, entry, _, err = bzimage.OpenPVH(in.kernelPath, in.cacheDir); err == nil {
			defer f.Close()
			var fi os.FileInfo
			if fi, err = f.Stat(); err == nil {
				return loadPVHAt(mem, in, f, fi.Size(), entry)
			}
		}
		if in.protocol == BootPVH {
			return bootInfo{}, fmt.Errorf("pvh boot of a bzImage: %w", err)
		}
		if !errors.Is(err, bzimage.ErrNoPVH) && !errors.Is(err, bzimage.ErrUnsupported) && !errors.Is(err, bzimage.ErrNotBzImage) {
			return bootInfo{}, fmt.Errorf("pvh boot of a bzImage (-boot-protocol linux64 skips it): %w", err)
		}
	}
	pvhErr := err
	if in.kernelHead {
		if in.kernel, err = readFileMax(in.kernelPath, maxKernelSize); err != nil {
			return bootInfo{}, fmt.Errorf("reading kernel: %w", err)
		}
		in.kernelHead = false
	}
	img, err := bzimage.Parse(in.kernel)
	if err != nil {
		return bootInfo{}, fmt.Errorf("kernel is neither an ELF with a PVH note nor a bzImage: %w", err)
	}
	if pvhErr != nil {
		// OpenPVH said above why this bzImage takes the 64-bit protocol.
		b, lerr := loadLinux64(mem, in, img)
		b.whyNotPVH = pvhErr
		return b, lerr
	}
	if in.protocol != BootLinux64 {
		if in.kernelPath == "" {
			var elfData []byte
			var entry uint32
			if elfData, entry, err = img.PVHKernel(); err == nil {
				return loadPVH(mem, in, elfData, entry)
			}
		}
		if in.protocol == BootPVH {
			return bootInfo{}, fmt.Errorf("pvh boot of a bzImage: %w", err)
		}
		// Auto takes the 64-bit protocol only for kernels PVH cannot
		// boot, never because of a failure on the way (a cache that
		// cannot be opened, a read error): those are errors.
		if !errors.Is(err, bzimage.ErrNoPVH) && !errors.Is(err, bzimage.ErrUnsupported) {
			return bootInfo{}, fmt.Errorf("pvh boot of a bzImage (-boot-protocol linux64 skips it): %w", err)
		}
		b, lerr := loadLinux64(mem, in, img)
		b.whyNotPVH = err
		return b, lerr
	}
	return loadLinux64(mem, in, img)
}

// placeInitrd puts the initrd at the highest page-aligned address below
// limit that is above floor; it returns 0 for no initrd.
func placeInitrd(mem *guestmem.Memory, initrd []byte, floor, limit uint64) (uint64, error) {
	if len(initrd) == 0 {
		return 0, nil
	}
	n := uint64(len(initrd))
	if n > limit || (limit-n)&^0xfff < floor {
		return 0, fmt.Errorf("initrd of %d bytes does not fit between %#x and %#x", n, floor, limit)
	}
	addr := (limit - n) &^ 0xfff
	if err := mem.Write(addr, initrd); err != nil {
		return 0, fmt.Errorf("writing initrd at %#x: %w", addr, err)
	}
	return addr, nil
}

// writeCmdline writes the NUL-terminated command line at cmdlineAddr;
// max counts the NUL.
func writeCmdline(mem *guestmem.Memory, cmdline string, max uint64) error {
	if uint64(len(cmdline))+1 > max {
		return fmt.Errorf("kernel command line of %d bytes exceeds %d", len(cmdline), max-1)
	}
	b := append([]byte(cmdline), 0)
	if err := mem.Write(cmdlineAddr, b); err != nil {
		return fmt.Errorf("writing command line: %w", err)
	}
	return nil
}

// PVH structures (xen/include/public/arch-x86/hvm/start_info.h).
const (
	hvmStartMagic   = 0x336ec578
	hvmStartVersion = 1
	hvmMemmapMax    = 64
)

// loadPVH loads elfData's PT_LOAD segments at their physical addresses and
// writes hvm_start_info (version 1: memmap, cmdline, initrd module, RSDP).
func loadPVH(mem *guestmem.Memory, in bootInput, elfData []byte, entry uint32) (bootInfo, error) {
	return loadPVHAt(mem, in, bytes.NewReader(elfData), int64(len(elfData)), entry)
}

// loadPVHAt is loadPVH reading the ELF through r (size bytes): segments go
// straight from the file into guest RAM.
func loadPVHAt(mem *guestmem.Memory, in bootInput, r io.ReaderAt, size int64, entry uint32) (bootInfo, error) {
	segs, err := parseELFAt(r, size)
	if err != nil {
		return bootInfo{}, fmt.Errorf("pvh kernel: %w", err)
	}
	var kernelEnd uint64
	for _, s := range segs {
		if s.Paddr < biosEnd {
			return bootInfo{}, fmt.Errorf("pvh kernel segment at %#x overlaps the boot area below 1 MiB", s.Paddr)
		}
		dst, err := mem.Slice(s.Paddr, s.Memsz)
		if err != nil {
			return bootInfo{}, fmt.Errorf("pvh kernel segment at %#x+%#x: %w", s.Paddr, s.Memsz, err)
		}
		if _, err := r.ReadAt(dst[:s.Filesz], int64(s.Offset)); err != nil {
			return bootInfo{}, fmt.Errorf("reading pvh kernel segment at %#x: %w", s.Paddr, err)
		}
		clear(dst[s.Filesz:])
		kernelEnd = max(kernelEnd, s.Paddr+s.Memsz)
	}
	if err := writeCmdline(mem, in.cmdline, cmdlineMax); err != nil {
		return bootInfo{}, err
	}
	// struct hvm_start_info (56 bytes): magic 0, version 4, flags 8,
	// nr_modules 12, modlist_paddr 16, cmdline_paddr 24, rsdp_paddr 32,
	// memmap_paddr 40, memmap_entries 48 (version 1 fields).
	le := binary.LittleEndian
	info := make([]byte, 56)
	le.PutUint32(info[0:], hvmStartMagic)
	le.PutUint32(info[4:], hvmStartVersion)
	le.PutUint64(info[24:], cmdlineAddr)
	le.PutUint64(info[32:], in.rsdp)
	if len(in.e820) > hvmMemmapMax {
		return bootInfo{}, fmt.Errorf("memory map of %d entries exceeds %d", len(in.e820), hvmMemmapMax)
	}
	// struct hvm_memmap_table_entry: addr, size (u64), type, reserved
	// (u32); the types are e820's.
	mm := make([]byte, 24*len(in.e820))
	for i, e := range in.e820 {
		le.PutUint64(mm[24*i:], e.Addr)
		le.PutUint64(mm[24*i+8:], e.Size)
		le.PutUint32(mm[24*i+16:], e.Type)
	}
	if err := mem.Write(pvhMemmapAddr, mm); err != nil {
		return bootInfo{}, fmt.Errorf("writing pvh memory map: %w", err)
	}
	le.PutUint64(info[40:], pvhMemmapAddr)
	le.PutUint32(info[48:], uint32(len(in.e820)))
	addr, err := placeInitrd(mem, in.initrd, (kernelEnd+0xfff)&^0xfff, in.lowEnd)
	if err != nil {
		return bootInfo{}, err
	}
	if addr != 0 {
		// struct hvm_modlist_entry: paddr, size, cmdline_paddr (0:
		// none), reserved, all u64. Linux takes module 0 as its initrd.
		mod := make([]byte, 32)
		le.PutUint64(mod[0:], addr)
		le.PutUint64(mod[8:], uint64(len(in.initrd)))
		if err := mem.Write(pvhModlistAddr, mod); err != nil {
			return bootInfo{}, fmt.Errorf("writing pvh module list: %w", err)
		}
		le.PutUint32(info[12:], 1)
		le.PutUint64(info[16:], pvhModlistAddr)
	}
	if err := mem.Write(pvhStartInfo, info); err != nil {
		return bootInfo{}, fmt.Errorf("writing hvm_start_info: %w", err)
	}
	return bootInfo{protocol: BootPVH, entry: uint64(entry), param: pvhStartInfo}, nil
}
