//go:build amd64

package pc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// elfSegment is one PT_LOAD program header of a little-endian ELF file.
type elfSegment struct {
	Paddr, Offset, Filesz, Memsz uint64
}

// ErrNotELF is returned by parseELF for data that is not a little-endian
// ELF64 x86-64 or ELF32 i386 file.
var ErrNotELF = errors.New("not a little-endian ELF64 x86-64 or ELF32 i386 file")

// elfLayout is where the fields parseELF needs sit in one ELF class
// (System V ABI, "ELF Header" and "Program Header").
type elfLayout struct {
	machine  uint16 // EM_X86_64 or EM_386
	wordSize int    // 8 or 4: e_entry, e_phoff, e_shoff
	phoff    int    // offset of e_phoff; e_shoff, e_flags (4) and e_ehsize (2) come before e_phentsize
	phentMin uint64 // size of one program header
}

var (
	elf64Layout = elfLayout{machine: 62, wordSize: 8, phoff: 32, phentMin: 56}
	elf32Layout = elfLayout{machine: 3, wordSize: 4, phoff: 28, phentMin: 32}
)

func (l elfLayout) word(b []byte) uint64 {
	if l.wordSize == 8 {
		return binary.LittleEndian.Uint64(b)
	}
	return uint64(binary.LittleEndian.Uint32(b))
}

// segment decodes p_offset, p_paddr, p_filesz and p_memsz: ELF64 puts
// p_flags after p_type, ELF32 puts it after p_memsz.
func (l elfLayout) segment(ph []byte) elfSegment {
	if l.wordSize == 8 {
		return elfSegment{Offset: l.word(ph[8:]), Paddr: l.word(ph[24:]), Filesz: l.word(ph[32:]), Memsz: l.word(ph[40:])}
	}
	return elfSegment{Offset: l.word(ph[4:]), Paddr: l.word(ph[12:]), Filesz: l.word(ph[16:]), Memsz: l.word(ph[20:])}
}

const (
	ptLoad      = 1
	maxSegments = 64
)

// parseELF validates an ELF64 image's header and PT_LOAD segments: every
// segment lies inside the file, has filesz <= memsz, and does not wrap.
// The image is untrusted (a user-supplied kernel): errors, never panics.
func parseELF(b []byte) ([]elfSegment, error) {
	return parseELFAt(bytes.NewReader(b), int64(len(b)))
}

// parseELFAt is parseELF for a file of size bytes read through r: only the
// header and program headers are read, so a large vmlinux is never held in
// memory whole.
func parseELFAt(r io.ReaderAt, size int64) ([]elfSegment, error) {
	hdr := make([]byte, 64)
	if size < 52 {
		return nil, ErrNotELF
	}
	if _, err := r.ReadAt(hdr[:min(size, 64)], 0); err != nil {
		return nil, fmt.Errorf("reading elf header: %w", err)
	}
	if string(hdr[:4]) != "\x7fELF" || hdr[5] != 1 {
		return nil, ErrNotELF
	}
	// The PVH ABI allows ELF32 as well as ELF64 (QEMU boots both): the
	// class picks the header layout, ELF64 x86-64 or ELF32 i386.
	le := binary.LittleEndian
	var l elfLayout
	switch {
	case hdr[4] == 2 && size >= 64:
		l = elf64Layout
	case hdr[4] == 1:
		l = elf32Layout
	default:
		return nil, ErrNotELF
	}
	if m := le.Uint16(hdr[18:]); m != l.machine {
		return nil, fmt.Errorf("elf machine %d: %w", m, ErrNotELF)
	}
	phoff := l.word(hdr[l.phoff:])
	phentsize := uint64(le.Uint16(hdr[l.phoff+2*l.wordSize+6:]))
	phnum := uint64(le.Uint16(hdr[l.phoff+2*l.wordSize+8:]))
	if phentsize < l.phentMin || phentsize > 4096 || phnum == 0 || phnum > 512 {
		return nil, fmt.Errorf("elf program headers: entsize %d, count %d", phentsize, phnum)
	}
	fsize := uint64(size)
	if phoff > fsize || phnum*phentsize > fsize-phoff {
		return nil, fmt.Errorf("elf program headers at %#x+%d*%d beyond the %d-byte file", phoff, phnum, phentsize, size)
	}
	phdrs := make([]byte, phnum*phentsize)
	if _, err := r.ReadAt(phdrs, int64(phoff)); err != nil {
		return nil, fmt.Errorf("reading elf program headers: %w", err)
	}
	var segs []elfSegment
	for i := uint64(0); i < phnum; i++ {
		ph := phdrs[i*phentsize:]
		if le.Uint32(ph) != ptLoad {
			continue
		}
		s := l.segment(ph)
		if s.Filesz > s.Memsz {
			return nil, fmt.Errorf("elf segment %d: filesz %#x > memsz %#x", i, s.Filesz, s.Memsz)
		}
		if s.Offset > fsize || s.Filesz > fsize-s.Offset {
			return nil, fmt.Errorf("elf segment %d at file offset %#x+%#x beyond the %d-byte file", i, s.Offset, s.Filesz, size)
		}
		if s.Paddr+s.Memsz < s.Paddr {
			return nil, fmt.Errorf("elf segment %d at %#x+%#x wraps", i, s.Paddr, s.Memsz)
		}
		if len(segs) == maxSegments {
			return nil, fmt.Errorf("elf has more than %d loadable segments", maxSegments)
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		return nil, errors.New("elf has no loadable segments")
	}
	return segs, nil
}
