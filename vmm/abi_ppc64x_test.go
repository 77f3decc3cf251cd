//go:build ppc64 || ppc64le

package vmm

import (
	"testing"
	"unsafe"
)

// The expected numbers were printed by a C program including Linux 6.1's
// linux/kvm.h with powerpc's asm/ioctl.h and asm/kvm.h (Debian package
// linux-libc-dev-ppc64el-cross). scripts/test-cross.sh runs these tests
// as ppc64 and ppc64le binaries under qemu-user.
func TestPPCIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_API_VERSION", ioctlGetAPIVersion, 0x2000ae00},
		{"KVM_CREATE_VM", ioctlCreateVM, 0x2000ae01},
		{"KVM_CHECK_EXTENSION", ioctlCheckExtension, 0x2000ae03},
		{"KVM_GET_VCPU_MMAP_SIZE", ioctlGetVCPUMmapSize, 0x2000ae04},
		{"KVM_CREATE_VCPU", ioctlCreateVCPU, 0x2000ae41},
		{"KVM_SET_USER_MEMORY_REGION", ioctlSetUserMemoryRegion, 0x8020ae46},
		{"KVM_RUN", ioctlRun, 0x2000ae80},
		{"KVM_GET_REGS", ioctlGetRegs, 0x4188ae81},
		{"KVM_SET_REGS", ioctlSetRegs, 0x8188ae82},
		{"KVM_GET_SREGS", ioctlGetSregs, 0x44d0ae83},
		{"KVM_SET_SREGS", ioctlSetSregs, 0x84d0ae84},
		{"KVM_ENABLE_CAP", ioctlEnableCap, 0x8068aea3},
		{"KVM_PPC_ALLOCATE_HTAB", ioctlPPCAllocateHTAB, 0xc004aea7},
		{"KVM_SET_ONE_REG", ioctlSetOneReg, 0x8010aeac},
		{"KVM_INTERRUPT", ioctlInterrupt, 0x8004ae86},
		{"KVM_PPC_CONFIGURE_V3_MMU", ioctlPPCConfigureMMU3, 0x8010aeaf},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

// TestPPCStructLayout checks the Go mirrors of the powerpc KVM structures
// against the sizes and offsets of the C ones.
func TestPPCStructLayout(t *testing.T) {
	var r Regs
	var s Sregs
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof kvm_regs", unsafe.Sizeof(r), 392},
		{"offsetof kvm_regs.gpr", unsafe.Offsetof(r.GPR), 136},
		{"sizeof kvm_sregs", unsafe.Sizeof(s), 1232},
		{"offsetof kvm_sregs.u.s.sdr1", unsafe.Offsetof(s.SDR1), 8},
		{"sizeof kvm_userspace_memory_region", unsafe.Sizeof(kvmUserspaceMemoryRegion{}), 32},
		{"sizeof kvm_enable_cap", unsafe.Sizeof(kvmEnableCap{}), 104},
		{"sizeof kvm_one_reg", unsafe.Sizeof(kvmOneReg{}), 16},
		{"sizeof kvm_ppc_mmuv3_cfg", unsafe.Sizeof(kvmPPCMMUv3Cfg{}), 16},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}
