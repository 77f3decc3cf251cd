package pc

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	if len(b) < 64 || string(b[:4]) != "\x7fELF" || b[4] != 2 || b[5] != 1 {
		return nil, ErrNotELF
	}
	le := binary.LittleEndian
	if m := le.Uint16(b[18:]); m != 62 { // EM_X86_64
		return nil, fmt.Errorf("elf machine %d: %w", m, ErrNotELF)
	}
	phoff := le.Uint64(b[32:])
	phentsize := uint64(le.Uint16(b[54:]))
	phnum := uint64(le.Uint16(b[56:]))
	if phentsize < 56 || phnum == 0 || phnum > 512 {
		return nil, fmt.Errorf("elf program headers: entsize %d, count %d", phentsize, phnum)
	}
	if phoff > uint64(len(b)) || phnum*phentsize > uint64(len(b))-phoff {
		return nil, fmt.Errorf("elf program headers at %#x+%d*%d beyond the %d-byte file", phoff, phnum, phentsize, len(b))
	}
	var segs []elfSegment
	for i := uint64(0); i < phnum; i++ {
		ph := b[phoff+i*phentsize:]
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
		if s.Offset > uint64(len(b)) || s.Filesz > uint64(len(b))-s.Offset {
			return nil, fmt.Errorf("elf segment %d at file offset %#x+%#x beyond the %d-byte file", i, s.Offset, s.Filesz, len(b))
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
