//go:build amd64

package pc

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/firmware/bzimage"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// boot_params ("zero page") offsets, Documentation/arch/x86/zero-page.rst
// and boot.rst.
const (
	bpAcpiRsdpAddr    = 0x070
	bpExtRamdiskImage = 0x0c0
	bpExtRamdiskSize  = 0x0c4
	bpExtCmdLinePtr   = 0x0c8
	bpE820Entries     = 0x1e8
	bpSetupHeader     = 0x1f1
	bpVidMode         = 0x1fa
	bpJump            = 0x200 // the byte at 0x201 gives the header's length
	bpTypeOfLoader    = 0x210
	bpLoadFlags       = 0x211
	bpRamdiskImage    = 0x218
	bpRamdiskSize     = 0x21c
	bpHeapEndPtr      = 0x224
	bpCmdLinePtr      = 0x228
	bpInitrdAddrMax   = 0x22c
	bpCmdlineSize     = 0x238
	bpE820Table       = 0x2d0
	bpSize            = 0x1000

	e820MaxZeroPage = 128
	canUseHeap      = 0x80
	// 64-bit boot protocol needs 2.12 (xloadflags) to know the entry exists.
	minVersion64 = 0x020c
)

// loadLinux64 loads a bzImage for the 64-bit boot protocol: protected-mode
// code at 1 MiB, boot_params at zeroPageAddr, entry at load address + 0x200.
func loadLinux64(mem *guestmem.Memory, in bootInput, img *bzimage.Image) (bootInfo, error) {
	k := in.kernel
	if img.Version < minVersion64 || img.XLoadFlags&bzimage.XLFKernel64 == 0 {
		return bootInfo{}, fmt.Errorf("bzImage protocol %d.%02d has no 64-bit entry (xloadflags %#x)",
			img.Version>>8, img.Version&0xff, img.XLoadFlags)
	}
	pm := img.ProtectedMode(k)
	need := uint64(len(pm))
	if uint64(img.InitSize) > need {
		need = uint64(img.InitSize)
	}
	if kernelAddr+need > in.lowEnd {
		return bootInfo{}, fmt.Errorf("kernel needs %d MiB from 1 MiB; guest has %d MiB below 4 GiB",
			need>>20, in.lowEnd>>20)
	}
	if err := mem.Write(kernelAddr, pm); err != nil {
		return bootInfo{}, fmt.Errorf("writing kernel at %#x: %w", kernelAddr, err)
	}

	// boot_params starts zeroed and takes the kernel's own setup header,
	// which runs from 0x1f1 to 0x202 plus the byte at 0x201 (boot.rst,
	// "The real-mode kernel header"); the loader then fills in its part.
	bp := make([]byte, bpSize)
	hdrEnd := bpJump + 2 + int(k[bpJump+1])
	if hdrEnd > len(k) || hdrEnd > bpE820Table {
		return bootInfo{}, fmt.Errorf("bzImage setup header end %#x out of range", hdrEnd)
	}
	copy(bp[bpSetupHeader:hdrEnd], k[bpSetupHeader:hdrEnd])
	le := binary.LittleEndian
	le.PutUint16(bp[bpVidMode:], 0xffff) // "normal" (vga=normal): no mode change
	bp[bpTypeOfLoader] = 0xff            // a boot loader without an assigned id
	// heap_end_ptr is the end of the setup heap minus 0x200 (boot.rst):
	// the heap runs to the end of the 64 KiB real-mode segment.
	bp[bpLoadFlags] |= canUseHeap
	le.PutUint16(bp[bpHeapEndPtr:], 0xfe00)

	// Before protocol 2.06 the command line is at most 255 bytes; from
	// 2.06 cmdline_size gives the limit, the NUL not counted.
	cmdMax := uint64(256)
	if img.Version >= 0x0206 {
		cmdMax = uint64(le.Uint32(k[bpCmdlineSize:])) + 1
	}
	if err := writeCmdline(mem, in.cmdline, min(cmdMax, cmdlineMax)); err != nil {
		return bootInfo{}, err
	}
	le.PutUint32(bp[bpCmdLinePtr:], cmdlineAddr)
	le.PutUint32(bp[bpExtCmdLinePtr:], 0) // cmd_line_ptr's high 32 bits

	// initrd_addr_max is the highest byte the initrd may occupy.
	limit := in.lowEnd
	if m := uint64(le.Uint32(k[bpInitrdAddrMax:])); m != 0 && m+1 < limit {
		limit = m + 1
	}
	// A relocatable kernel decompresses itself at pref_address (16 MiB for
	// x86-64) and needs init_size from there: keep the initrd above both.
	floor := kernelAddr + need
	if img.PrefAddress > kernelAddr && img.PrefAddress < in.lowEnd {
		floor = max(floor, img.PrefAddress+uint64(img.InitSize))
	}
	addr, err := placeInitrd(mem, in.initrd, (floor+0xfff)&^0xfff, limit)
	if err != nil {
		return bootInfo{}, err
	}
	if addr != 0 {
		n := uint64(len(in.initrd))
		le.PutUint32(bp[bpRamdiskImage:], uint32(addr))
		le.PutUint32(bp[bpRamdiskSize:], uint32(n))
		// ext_ramdisk_*: the high 32 bits (zero-page.rst).
		le.PutUint32(bp[bpExtRamdiskImage:], uint32(addr>>32))
		le.PutUint32(bp[bpExtRamdiskSize:], uint32(n>>32))
	}
	le.PutUint64(bp[bpAcpiRsdpAddr:], in.rsdp)
	if len(in.e820) > e820MaxZeroPage {
		return bootInfo{}, fmt.Errorf("memory map of %d entries exceeds %d", len(in.e820), e820MaxZeroPage)
	}
	bp[bpE820Entries] = byte(len(in.e820))
	// struct boot_e820_entry is packed: addr, size (u64), type (u32).
	for i, e := range in.e820 {
		o := bpE820Table + 20*i
		le.PutUint64(bp[o:], e.Addr)
		le.PutUint64(bp[o+8:], e.Size)
		le.PutUint32(bp[o+16:], e.Type)
	}
	if err := mem.Write(zeroPageAddr, bp); err != nil {
		return bootInfo{}, fmt.Errorf("writing boot_params: %w", err)
	}
	return bootInfo{protocol: BootLinux64, entry: kernelAddr + 0x200, param: zeroPageAddr}, nil
}
