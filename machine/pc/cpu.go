//go:build amd64

package pc

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// GDT selectors the boot paths use (Linux's __BOOT_CS/__BOOT_DS).
const (
	selCode = 0x10
	selData = 0x18
	selTSS  = 0x20
)

// gdtEntries returns the boot GDT: null, null, code (64-bit for Linux,
// 32-bit for PVH), flat data, and a TSS descriptor KVM needs for TR.
func gdtEntries(long bool) []uint64 {
	code := uint64(0x00cf9b000000ffff) // 32-bit, 4 GiB, execute/read, accessed
	if long {
		code = 0x00af9b000000ffff // L=1, D=0
	}
	return []uint64{0, 0, code, 0x00cf93000000ffff, 0x008b00000000ffff}
}

// segment is the hidden part of a segment register loaded with sel from
// gdtEntries(long): KVM_SET_SREGS takes it as is, no GDT walk.
func segment(sel uint16, long bool) vmm.Segment {
	s := vmm.Segment{Base: 0, Limit: 0xffffffff, Selector: sel, Present: 1, S: 1, G: 1}
	switch sel {
	case selCode:
		s.Typ = 11 // execute/read, accessed
		if long {
			s.L = 1
		} else {
			s.DB = 1
		}
	case selData:
		s.Typ = 3 // read/write, accessed
		s.DB = 1
	case selTSS:
		// VM entry requires TR to hold a busy TSS: type 11 (32- or
		// 64-bit busy TSS) with S = 0 (Intel SDM vol. 3, checks on
		// guest segment registers).
		s.Typ = 11
		s.S = 0
		s.G = 0
		s.Limit = 0xffff
	}
	return s
}

// writeBootTables writes the GDT and, for long mode, identity page tables
// mapping the first 4 GiB with 2 MiB pages (the 64-bit boot protocol needs
// the kernel, boot_params and command line identity-mapped).
func writeBootTables(mem *guestmem.Memory, long bool) error {
	le := binary.LittleEndian
	g := gdtEntries(long)
	b := make([]byte, 8*len(g))
	for i, e := range g {
		le.PutUint64(b[8*i:], e)
	}
	if err := mem.Write(gdtAddr, b); err != nil {
		return fmt.Errorf("writing gdt: %w", err)
	}
	if !long {
		return nil
	}
	pml4 := make([]byte, 4096)
	le.PutUint64(pml4, pdptAddr|3)
	pdpt := make([]byte, 4096)
	for i := uint64(0); i < 4; i++ {
		le.PutUint64(pdpt[8*i:], (pdAddr+i*4096)|3)
	}
	pd := make([]byte, 4*4096)
	for i := uint64(0); i < 2048; i++ {
		le.PutUint64(pd[8*i:], i<<21|0x83) // present, writable, 2 MiB page
	}
	for _, t := range []struct {
		addr uint64
		b    []byte
	}{{pml4Addr, pml4}, {pdptAddr, pdpt}, {pdAddr, pd}} {
		if err := mem.Write(t.addr, t.b); err != nil {
			return fmt.Errorf("writing page tables at %#x: %w", t.addr, err)
		}
	}
	return nil
}

// Control register bits.
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4
	cr0NE   = 1 << 5
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10
)

// setupBootCPU puts the boot vCPU at the kernel entry: 32-bit flat
// protected mode with paging off for PVH (Xen's docs/misc/pvh.pandoc:
// ebx = hvm_start_info), long mode with identity paging for the Linux
// 64-bit protocol (boot.rst, "64-bit Boot Protocol": flat __BOOT_CS 0x10
// and __BOOT_DS 0x18, rsi = boot_params).
func setupBootCPU(v *vmm.VCPU, bi bootInfo) error {
	long := bi.protocol == BootLinux64
	s, err := v.Sregs()
	if err != nil {
		return err
	}
	code, data := segment(selCode, long), segment(selData, long)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = segment(selTSS, long)
	s.GDT.Base, s.GDT.Limit = gdtAddr, uint16(8*len(gdtEntries(long))-1)
	s.IDT.Base, s.IDT.Limit = 0, 0
	s.CR0 = cr0PE | cr0ET | cr0NE
	s.CR4 = 0
	s.EFER = 0
	if long {
		s.CR3 = pml4Addr
		s.CR4 = cr4PAE
		s.CR0 |= cr0PG
		s.EFER = eferLME | eferLMA
	}
	if err := v.SetSregs(s); err != nil {
		return err
	}
	// RFLAGS bit 1 is reserved and reads as one; IF is clear, as both
	// protocols want.
	r := &vmm.Regs{RIP: bi.entry, RFLAGS: 2}
	if long {
		r.RSI = bi.param
		r.RSP = bootStackTop
	} else {
		r.RBX = bi.param
	}
	return v.SetRegs(r)
}
