//go:build amd64

package pc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// elfSegment is one PT_LOAD program header of an ELF64 little-endian file.
type elfSegment struct {
	Paddr, Offset, Filesz, Memsz uint64
}

// ErrNotELF is returned by parseELF for data without the ELF64 LE magic.
var ErrNotELF = errors.New("not an ELF64 little-endian x86-64 file")

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
	if size < 64 {
		return nil, ErrNotELF
	}
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("reading elf header: %w", err)
	}
	if string(hdr[:4]) != "\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
		return nil, ErrNotELF
	}
	le := binary.LittleEndian
	if m := le.Uint16(hdr[18:]); m != 62 { // EM_X86_64
		return nil, fmt.Errorf("elf machine %d: %w", m, ErrNotELF)
	}
	phoff := le.Uint64(hdr[32:])
	phentsize := uint64(le.Uint16(hdr[54:]))
	phnum := uint64(le.Uint16(hdr[56:]))
	if phentsize < 56 || phentsize > 4096 || phnum == 0 || phnum > 512 {
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
		s := elfSegment{
			Offset: le.Uint64(ph[8:]),
			Paddr:  le.Uint64(ph[24:]),
			Filesz: le.Uint64(ph[32:]),
			Memsz:  le.Uint64(ph[40:]),
		}
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
