//go:build ppc64 || ppc64le

package vmm

// The POWER ioctls (linux/kvm.h with arch/powerpc/include/uapi/asm/kvm.h;
// argument sizes are those of the powerpc structures, checked in
// abi_ppc64x_test.go against values printed from the Linux 6.1 headers).
var (
	ioctlGetRegs          = ioc(iocRead, 0x81, 392)
	ioctlSetRegs          = ioc(iocWrite, 0x82, 392)
	ioctlGetSregs         = ioc(iocRead, 0x83, 1232)
	ioctlSetSregs         = ioc(iocWrite, 0x84, 1232)
	ioctlInterrupt        = ioc(iocWrite, 0x86, 4)
	ioctlEnableCap        = ioc(iocWrite, 0xa3, 104)
	ioctlPPCAllocateHTAB  = ioc(iocRead|iocWrite, 0xa7, 4)
	ioctlSetOneReg        = ioc(iocWrite, 0xac, 16)
	ioctlPPCConfigureMMU3 = ioc(iocWrite, 0xaf, 16)
)

// POWER capabilities (KVM_CAP_*).
const (
	capPPCPAPR     = 68
	capOneReg      = 70
	capPPCMMURadix = 134
)

// requiredCaps are what a pseries machine needs of KVM on POWER whatever
// its flavour (HV or PR). KVM_CAP_PPC_PAPR depends on the flavour, so it
// is checked on the VM (VM.CheckPAPR).
var requiredCaps = append(commonCaps[:len(commonCaps):len(commonCaps)],
	capability{capOneReg, "KVM_CAP_ONE_REG", "LPCR and HIOR (KVM_SET_ONE_REG)"},
)
