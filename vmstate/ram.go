package vmstate

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// PageSize is the unit of the RAM section: a page that reads as zeroes is
// not written, only its bit in the region's bitmap is clear.
const PageSize = 4096

// RAMRegion is one range of guest RAM and the host memory behind it.
type RAMRegion struct {
	// GuestAddr is the region's guest-physical base; ReadRAM requires
	// the same regions, address and size, as WriteRAM saw.
	GuestAddr uint64
	Mem       []byte // a multiple of PageSize
	// Resident, when not nil, has a byte per page of Mem whose bit 0 is
	// clear for a page known to read as zeroes without looking (mincore's
	// answer for private anonymous memory that cannot have been swapped
	// out: a page never touched). WriteRAM then does not read it, which
	// would fault it in.
	Resident []byte
}

// The "ram" section: page size u32, region count u32, then per region its
// guest address u64, size u64, a bitmap of its pages (bit i of byte i/8 set:
// page i follows) and the set pages in order.

// RAMSection is the section name WriteRAM and ReadRAM use.
const RAMSection = "ram"

const ramVersion = 1

var zeroPage [PageSize]byte

// isZeroPage compares with a page of zeroes: bytes.Equal is the runtime's
// vectorised memequal, several times faster than a word loop.
func isZeroPage(p []byte) bool { return bytes.Equal(p, zeroPage[:]) }

// WriteRAM writes the "ram" section and returns how many pages it stored.
// The memory must not change while it runs (vCPUs paused, no DMA).
func WriteRAM(w *Writer, regions []RAMRegion) (pages int64, err error) {
	bitmaps := make([][]byte, len(regions))
	length := uint64(8)
	for i, r := range regions {
		if len(r.Mem)%PageSize != 0 {
			return 0, fmt.Errorf("vmstate: ram region at %#x is not page sized", r.GuestAddr)
		}
		n := len(r.Mem) / PageSize
		bm := make([]byte, (n+7)/8)
		if r.Resident != nil && len(r.Resident) != n {
			return 0, fmt.Errorf("vmstate: ram region at %#x: %d residency bytes for %d pages", r.GuestAddr, len(r.Resident), n)
		}
		for p := 0; p < n; p++ {
			if r.Resident != nil && r.Resident[p]&1 == 0 {
				continue
			}
			if !isZeroPage(r.Mem[p*PageSize : (p+1)*PageSize]) {
				bm[p/8] |= 1 << (p % 8)
				pages++
			}
		}
		bitmaps[i] = bm
		length += 16 + uint64(len(bm))
	}
	length += uint64(pages) * PageSize
	sw := w.Begin(RAMSection, ramVersion, length)
	var h []byte
	h = binary.LittleEndian.AppendUint32(h, PageSize)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(regions)))
	sw.Write(h)
	for i, r := range regions {
		h = binary.LittleEndian.AppendUint64(h[:0], r.GuestAddr)
		h = binary.LittleEndian.AppendUint64(h, uint64(len(r.Mem)))
		sw.Write(h)
		sw.Write(bitmaps[i])
		for p := 0; p < len(r.Mem)/PageSize; p++ {
			if bitmaps[i][p/8]&(1<<(p%8)) != 0 {
				if _, err := sw.Write(r.Mem[p*PageSize : (p+1)*PageSize]); err != nil {
					return 0, err
				}
			}
		}
	}
	return pages, w.err
}

// ReadRAM reads the current section, which must be "ram", into regions:
// the regions must match the saved ones in number, address and size; pages
// saved as zero are cleared (a page already zero is not written, and one
// Resident marks as never touched is not even read, so an untouched page
// stays unallocated).
func ReadRAM(r *Reader, version uint32, regions []RAMRegion) error {
	if version != ramVersion {
		return fmt.Errorf("%w: ram section version %d, this Petrel reads %d", ErrCorrupt, version, ramVersion)
	}
	s := r.Stream()
	var h [16]byte
	if _, err := io.ReadFull(s, h[:8]); err != nil {
		return fmt.Errorf("%w: ram section: %v", ErrCorrupt, err)
	}
	if ps := binary.LittleEndian.Uint32(h[:]); ps != PageSize {
		return fmt.Errorf("%w: ram section page size %d", ErrCorrupt, ps)
	}
	if n := binary.LittleEndian.Uint32(h[4:]); int(n) != len(regions) {
		return fmt.Errorf("saved machine has %d RAM regions, this one %d", n, len(regions))
	}
	for _, reg := range regions {
		if _, err := io.ReadFull(s, h[:]); err != nil {
			return fmt.Errorf("%w: ram section: %v", ErrCorrupt, err)
		}
		addr, size := binary.LittleEndian.Uint64(h[:]), binary.LittleEndian.Uint64(h[8:])
		if addr != reg.GuestAddr || size != uint64(len(reg.Mem)) {
			return fmt.Errorf("saved RAM region is %d MiB at %#x, this machine's is %d MiB at %#x", size>>20, addr, len(reg.Mem)>>20, reg.GuestAddr)
		}
		n := len(reg.Mem) / PageSize
		if reg.Resident != nil && len(reg.Resident) != n {
			return fmt.Errorf("vmstate: ram region at %#x: %d residency bytes for %d pages", reg.GuestAddr, len(reg.Resident), n)
		}
		bm := make([]byte, (n+7)/8)
		if _, err := io.ReadFull(s, bm); err != nil {
			return fmt.Errorf("%w: ram bitmap: %v", ErrCorrupt, err)
		}
		for p := 0; p < n; p++ {
			page := reg.Mem[p*PageSize : (p+1)*PageSize]
			if bm[p/8]&(1<<(p%8)) != 0 {
				if _, err := io.ReadFull(s, page); err != nil {
					return fmt.Errorf("%w: ram page %#x: %v", ErrCorrupt, reg.GuestAddr+uint64(p*PageSize), err)
				}
			} else if (reg.Resident == nil || reg.Resident[p]&1 != 0) && !isZeroPage(page) {
				// A page Resident says was never touched is zero already:
				// reading it would only fault it in.
				clear(page)
			}
		}
	}
	if r.secLeft != 0 {
		return fmt.Errorf("%w: ram section has %d bytes after the last page", ErrCorrupt, r.secLeft)
	}
	return nil
}
