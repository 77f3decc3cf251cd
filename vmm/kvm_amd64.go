package vmm

// The x86 ioctls (linux/kvm.h; argument sizes are those of the x86-64
// structures, checked in layout_unsafe_test.go).
var (
	ioctlGetSupportedCPUID  = ioc(iocRead|iocWrite, 0x05, 8)
	ioctlSetTSSAddr         = ioc(iocNone, 0x47, 0)
	ioctlSetIdentityMapAddr = ioc(iocWrite, 0x48, 8)
	ioctlCreateIRQChip      = ioc(iocNone, 0x60, 0)
	ioctlGetIRQChip         = ioc(iocRead|iocWrite, 0x62, 520)
	ioctlSetIRQChip         = ioc(iocRead, 0x63, 520) // _IOR in linux/kvm.h, a historical quirk
	ioctlSetGSIRouting      = ioc(iocWrite, 0x6a, 8)
	ioctlCreatePIT2         = ioc(iocWrite, 0x77, 64)
	ioctlGetRegs            = ioc(iocRead, 0x81, 144)
	ioctlSetRegs            = ioc(iocWrite, 0x82, 144)
	ioctlGetSregs           = ioc(iocRead, 0x83, 312)
	ioctlSetSregs           = ioc(iocWrite, 0x84, 312)
	ioctlSetCPUID2          = ioc(iocWrite, 0x90, 8)
	ioctlGetCPUID2          = ioc(iocRead|iocWrite, 0x91, 8)
)

// x86 capabilities (KVM_CAP_*).
const (
	capIRQChip            = 0
	capSetTSSAddr         = 4
	capExtCPUID           = 7
	capIRQRouting         = 25
	capIRQFD              = 32
	capPIT2               = 33
	capIoeventfd          = 36
	capSetIdentityMapAddr = 37
	capSignalMSI          = 77
)

// requiredCaps are what a PC (machine/pc) needs of KVM on x86: Open
// refuses a host that lacks one, naming it, instead of failing later in
// the middle of building the machine.
var requiredCaps = append(commonCaps[:len(commonCaps):len(commonCaps)],
	capability{capIRQChip, "KVM_CAP_IRQCHIP", "the in-kernel PIC, IOAPIC and LAPIC"},
	capability{capSetTSSAddr, "KVM_CAP_SET_TSS_ADDR", "real-mode emulation on Intel hosts"},
	capability{capSetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR", "the EPT identity map on Intel hosts"},
	capability{capExtCPUID, "KVM_CAP_EXT_CPUID", "the guest CPUID (KVM_GET_SUPPORTED_CPUID, KVM_SET_CPUID2)"},
	capability{capPIT2, "KVM_CAP_PIT2", "the in-kernel i8254 timer"},
	capability{capIRQRouting, "KVM_CAP_IRQ_ROUTING", "MSI routes for irqfds"},
	capability{capIRQFD, "KVM_CAP_IRQFD", "interrupts injected from eventfds (virtio, ivshmem)"},
	capability{capIoeventfd, "KVM_CAP_IOEVENTFD", "guest writes signalled to eventfds (virtio notify, ivshmem doorbell)"},
	capability{capSignalMSI, "KVM_CAP_SIGNAL_MSI", "MSI injection (KVM_SIGNAL_MSI)"},
)
