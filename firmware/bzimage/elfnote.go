package bzimage

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
)

// XenElfnotePhys32Entry is the PVH entry note type (xen/include/public/elfnote.h).
const XenElfnotePhys32Entry = 18

// FindPVHEntry returns the 32-bit physical PVH entry point from the
// "Xen" note of type 18 in a PT_NOTE segment of an ELF64 or ELF32 file
// (the PVH ABI allows both). Linux emits the address as a quad (_ASM_PTR);
// a 4-byte descriptor is accepted too. A malformed file, or a note whose
// address does not fit 32 bits, yields false, never a panic.
func FindPVHEntry(elfData []byte) (uint32, bool) {
	return FindPVHEntryReader(bytes.NewReader(elfData), int64(len(elfData)))
}

// maxNotes bounds the PT_NOTE bytes read from an ELF file, in bytes; a
// kernel's notes take a few hundred, so a larger segment is skipped as
// malformed rather than allocated.
const maxNotes = 1 << 20

// FindPVHEntryReader is FindPVHEntry for an ELF file of size bytes read
// through r (a cached vmlinux need not be in memory to be checked).
func FindPVHEntryReader(r io.ReaderAt, size int64) (uint32, bool) {
	f, err := elf.NewFile(r)
	if err != nil || (f.Class != elf.ELFCLASS64 && f.Class != elf.ELFCLASS32) {
		return 0, false
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > maxNotes {
			continue
		}
		// Bounds from the file, not the header: a cached file may be
		// truncated, and debug/elf does not check a program header
		// against the file's size.
		if p.Off > uint64(size) || p.Filesz > uint64(size)-p.Off {
			continue
		}
		notes := make([]byte, p.Filesz)
		if _, err := r.ReadAt(notes, int64(p.Off)); err != nil {
			continue
		}
		if e, ok := scanNotes(notes, f.ByteOrder); ok {
			return e, true
		}
	}
	return 0, false
}

// scanNotes walks ELF notes: namesz, descsz, type, name (4-byte aligned), desc (aligned).
func scanNotes(b []byte, bo binary.ByteOrder) (uint32, bool) {
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz := uint64(bo.Uint32(b[0:]))
		descsz := uint64(bo.Uint32(b[4:]))
		typ := bo.Uint32(b[8:])
		rest := uint64(len(b) - 12)
		if align(namesz) > rest || descsz > rest-align(namesz) {
			return 0, false
		}
		name := b[12 : 12+namesz]
		desc := b[12+align(namesz) : 12+align(namesz)+descsz]
		// namesz counts the name's NUL terminator ("Xen\0" is 4 bytes).
		if typ == XenElfnotePhys32Entry && string(bytes.TrimRight(name, "\x00")) == "Xen" {
			switch len(desc) {
			case 4:
				return bo.Uint32(desc), true
			case 8:
				v := bo.Uint64(desc)
				if v <= 0xffffffff {
					return uint32(v), true
				}
			}
			return 0, false
		}
		next := 12 + align(namesz) + align(descsz)
		if next > uint64(len(b)) {
			return 0, false
		}
		b = b[next:]
	}
	return 0, false
}

// PVHKernel decompresses img and checks that the result is an ELF vmlinux
// (ELF64, or ELF32 as the PVH ABI also allows) with a PVH entry note. It
// returns ErrNoPVH otherwise.
func (img *Image) PVHKernel() (elfData []byte, entry uint32, err error) {
	out, err := img.Decompress()
	if err != nil {
		return nil, 0, err
	}
	entry, ok := FindPVHEntry(out)
	if !ok {
		return nil, 0, fmt.Errorf("decompressed %s kernel: %w", img.Compression, ErrNoPVH)
	}
	return out, entry, nil
}
