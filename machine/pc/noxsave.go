//go:build amd64

package pc

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"
	"slices"
	"strings"
)

// withNoXsave returns the command line a Linux guest needs on this host.
//
// Petrel removes XSAVE from the guest's CPUID when the host's KVM cannot run
// XSAVE-family instructions (kvm_pvm's CPL0 emulator lacks xrstor), but
// kvm_pvm then forces the host's leaf 1 and 7 bits back (see
// vmm.Overridden). A Linux guest that believes in XSAVE spins on xrstor,
// so for a Linux kernel on such a host Petrel adds "noxsave" itself: a
// stock kernel boots without extra flags, as it would if the CPUID filter
// had held. Other guests (and command lines that already say it) are left
// alone.
func withNoXsave(cmdline string, kernel []byte, overrides []string) (string, bool) {
	if !slices.Contains(overrides, "xsave") || !isLinuxKernel(kernel) {
		return cmdline, false
	}
	for _, w := range strings.Fields(cmdline) {
		if w == "noxsave" {
			return cmdline, false
		}
	}
	if cmdline == "" {
		return "noxsave", true
	}
	return cmdline + " noxsave", true
}

// isLinuxKernel recognises a bzImage (boot protocol magic "HdrS" at 0x202)
// or an ELF vmlinux (a PT_NOTE named "Linux", which every vmlinux carries).
func isLinuxKernel(k []byte) bool {
	if len(k) >= 0x206 && string(k[0x202:0x206]) == "HdrS" {
		return true
	}
	f, err := elf.NewFile(bytes.NewReader(k))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), int64(p.Filesz)))
		if err != nil {
			continue
		}
		for len(b) >= 12 {
			namesz := binary.LittleEndian.Uint32(b)
			descsz := binary.LittleEndian.Uint32(b[4:])
			name := align4(uint64(namesz))
			desc := align4(uint64(descsz))
			if 12+name+desc > uint64(len(b)) {
				break
			}
			if string(bytes.TrimRight(b[12:12+uint64(namesz)], "\x00")) == "Linux" {
				return true
			}
			b = b[12+name+desc:]
		}
	}
	return false
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }
