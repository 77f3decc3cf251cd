package pseries

import "testing"

// The expected numbers were printed by a C program including Linux 6.1's
// linux/kvm.h with powerpc's asm/ioctl.h and asm/kvm.h (Debian package
// linux-libc-dev-ppc64el-cross).
func TestPPCKVMIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0x2000ae00},
		{"KVM_CREATE_VM", kvmCreateVM, 0x2000ae01},
		{"KVM_CHECK_EXTENSION", kvmCheckExtension, 0x2000ae03},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0x2000ae04},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, 0x2000ae41},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x8020ae46},
		{"KVM_RUN", kvmRun, 0x2000ae80},
		{"KVM_GET_REGS", kvmGetRegs, 0x4188ae81},
		{"KVM_SET_REGS", kvmSetRegs, 0x8188ae82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x44d0ae83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x84d0ae84},
		{"KVM_ENABLE_CAP", kvmEnableCapIoctl, 0x8068aea3},
		{"KVM_PPC_ALLOCATE_HTAB", kvmPPCAllocateHTAB, 0xc004aea7},
		{"KVM_SET_ONE_REG", kvmSetOneReg, 0x8010aeac},
		{"KVM_INTERRUPT", kvmInterrupt, 0x8004ae86},
		{"KVM_PPC_CONFIGURE_V3_MMU", kvmPPCConfigureV3MMU, 0x8010aeaf},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestHTABShift(t *testing.T) {
	for _, c := range []struct {
		ram  uint64
		want uint32
	}{{16 << 20, 18}, {32 << 20, 18}, {64 << 20, 19}, {1 << 30, 23}, {(1 << 30) + 1, 24}, {1 << 60, 46}} {
		if got := htabShiftFor(c.ram); got != c.want {
			t.Errorf("htabShiftFor(%#x) = %d, want %d", c.ram, got, c.want)
		}
	}
}
