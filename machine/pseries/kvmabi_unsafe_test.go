package pseries

import (
	"testing"
	"unsafe"
)

// TestPPCKVMStructLayout checks the Go mirrors of the KVM structures have
// the sizes and offsets of the C ones (see kvmabi_test.go for the source).
func TestPPCKVMStructLayout(t *testing.T) {
	var r kvmRegs
	var s kvmSregs
	var h kvmRunPAPRHcall
	var mm kvmRunMMIO
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof kvm_regs", unsafe.Sizeof(r), sizeofKVMRegs},
		{"offsetof kvm_regs.gpr", unsafe.Offsetof(r.GPR), 136},
		{"sizeof kvm_sregs", unsafe.Sizeof(s), sizeofKVMSregs},
		{"offsetof kvm_sregs.u.s.sdr1", unsafe.Offsetof(s.SDR1), 8},
		{"sizeof kvm_userspace_memory_region", unsafe.Sizeof(kvmUserspaceMemoryRegion{}), sizeofMemoryRegion},
		{"sizeof kvm_enable_cap", unsafe.Sizeof(kvmEnableCap{}), sizeofEnableCap},
		{"sizeof kvm_one_reg", unsafe.Sizeof(kvmOneReg{}), sizeofOneReg},
		{"sizeof kvm_ppc_mmuv3_cfg", unsafe.Sizeof(kvmPPCMMUv3Cfg{}), sizeofMMUv3Cfg},
		{"offsetof papr_hcall.args", unsafe.Offsetof(h.Args), 16},
		{"sizeof papr_hcall", unsafe.Sizeof(h), 88},
		{"offsetof mmio.len", unsafe.Offsetof(mm.Len), 16},
		{"offsetof mmio.is_write", unsafe.Offsetof(mm.IsWrite), 20},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}
