package pseries

// The ppc64 KVM ABI, kept portable so its numbers and layouts are checked
// by tests on every architecture. Sources: Linux include/uapi/linux/kvm.h,
// arch/powerpc/include/uapi/asm/kvm.h and arch/powerpc/include/uapi/asm/ioctl.h
// (uapi of Linux 6.1). The values in kvmabi_test.go were printed by a C
// program compiled against those headers.

// powerpc's ioctl encoding differs from the generic one: 13 size bits,
// 3 direction bits, and "none" is 1 (asm/ioctl.h).
const (
	ppcIOCNone  = 1
	ppcIOCRead  = 2
	ppcIOCWrite = 4

	ppcIOCNRShift   = 0
	ppcIOCTypeShift = 8
	ppcIOCSizeShift = 16
	ppcIOCDirShift  = 29

	kvmIOType = 0xAE
)

func ppcIOC(dir, nr, size uintptr) uintptr {
	return dir<<ppcIOCDirShift | kvmIOType<<ppcIOCTypeShift | nr<<ppcIOCNRShift | size<<ppcIOCSizeShift
}

// Sizes of the structures the ioctls carry (checked against the Go types
// in kvmabi_unsafe_test.go).
const (
	sizeofKVMRegs       = 392
	sizeofKVMSregs      = 1232
	sizeofMemoryRegion  = 32
	sizeofEnableCap     = 104
	sizeofOneReg        = 16
	sizeofKVMInterrupt  = 4
	sizeofHTABShiftWord = 4
)

var (
	kvmGetAPIVersion       = ppcIOC(ppcIOCNone, 0x00, 0)
	kvmCreateVM            = ppcIOC(ppcIOCNone, 0x01, 0)
	kvmCheckExtension      = ppcIOC(ppcIOCNone, 0x03, 0)
	kvmGetVCPUMmapSize     = ppcIOC(ppcIOCNone, 0x04, 0)
	kvmCreateVCPU          = ppcIOC(ppcIOCNone, 0x41, 0)
	kvmSetUserMemoryRegion = ppcIOC(ppcIOCWrite, 0x46, sizeofMemoryRegion)
	kvmRun                 = ppcIOC(ppcIOCNone, 0x80, 0)
	kvmGetRegs             = ppcIOC(ppcIOCRead, 0x81, sizeofKVMRegs)
	kvmSetRegs             = ppcIOC(ppcIOCWrite, 0x82, sizeofKVMRegs)
	kvmGetSregs            = ppcIOC(ppcIOCRead, 0x83, sizeofKVMSregs)
	kvmSetSregs            = ppcIOC(ppcIOCWrite, 0x84, sizeofKVMSregs)
	kvmEnableCapIoctl      = ppcIOC(ppcIOCWrite, 0xa3, sizeofEnableCap)
	kvmPPCAllocateHTAB     = ppcIOC(ppcIOCRead|ppcIOCWrite, 0xa7, sizeofHTABShiftWord)
	kvmSetOneReg           = ppcIOC(ppcIOCWrite, 0xac, sizeofOneReg)
	kvmInterrupt           = ppcIOC(ppcIOCWrite, 0x86, sizeofKVMInterrupt)
	kvmPPCConfigureV3MMU   = ppcIOC(ppcIOCWrite, 0xaf, sizeofMMUv3Cfg)
)

// struct kvm_ppc_mmuv3_cfg and its flags (ISA v3.00 MMU: radix or hash).
const (
	sizeofMMUv3Cfg    = 16
	kvmCapPPCMMURadix = 134
	kvmMMUv3Radix     = 1 // guest uses radix translation
	kvmMMUv3GTSE      = 2 // guest may issue tlbie itself
)

type kvmPPCMMUv3Cfg struct {
	Flags, ProcessTable uint64
}

// KVM_INTERRUPT arguments on powerpc (asm/kvm.h): raise the external
// interrupt as a level, or lower it.
const (
	kvmInterruptUnset    = 0xfffffffe // -2U
	kvmInterruptSetLevel = 0xfffffffd // -3U
)

// Capabilities, exit reasons and registers (linux/kvm.h, asm/kvm.h).
const (
	kvmAPIVersion       = 12
	kvmCapPPCPAPR       = 68
	kvmCapPPCAllocHTAB  = 80
	kvmExitUnknown      = 0
	kvmExitDebug        = 4
	kvmExitMMIO         = 6
	kvmExitShutdown     = 8
	kvmExitFailEntry    = 9
	kvmExitIntr         = 10
	kvmExitInternalErr  = 17
	kvmExitPAPRHcall    = 19
	kvmExitSystemEvent  = 24
	kvmRegPPCHIOR       = 0x1030000000000001
	kvmRegPPCLPCR64     = 0x10300000000000b5
	lpcrILE             = 1 << 25 // LPCR[ILE]: take interrupts little-endian
	msrSF               = 1 << 63 // 64-bit mode
	msrME               = 1 << 12 // machine check enable
	kvmRunExitReasonOff = 8       // kvm_run.exit_reason
	kvmRunImmediateExit = 1       // kvm_run.immediate_exit
	kvmRunUnionOff      = 32      // the per-exit union in kvm_run
)

// kvmRegs is struct kvm_regs on powerpc.
type kvmRegs struct {
	PC, CR, CTR, LR, XER, MSR, SRR0, SRR1, PID uint64
	SPRG                                       [8]uint64
	GPR                                        [32]uint64
}

// kvmSregs is struct kvm_sregs on powerpc, with only the Book3S view of the
// union (u.s): SDR1 and the SLB; the 32-bit segment and BAT registers and
// the padding are kept as bytes so KVM_SET_SREGS writes back what
// KVM_GET_SREGS gave.
type kvmSregs struct {
	PVR   uint32
	_     uint32 // the union is 8-byte aligned
	SDR1  uint64
	SLB   [64][2]uint64 // slbe, slbv
	PPC32 [192]byte     // sr[16], ibat[8], dbat[8]
}

// kvmUserspaceMemoryRegion is struct kvm_userspace_memory_region.
type kvmUserspaceMemoryRegion struct {
	Slot, Flags                              uint32
	GuestPhysAddr, MemorySize, UserspaceAddr uint64
}

// kvmEnableCap is struct kvm_enable_cap.
type kvmEnableCap struct {
	Cap, Flags uint32
	Args       [4]uint64
	Pad        [64]byte
}

// kvmOneReg is struct kvm_one_reg.
type kvmOneReg struct {
	ID, Addr uint64
}

// kvmRunPAPRHcall is kvm_run.papr_hcall, at kvmRunUnionOff: r3 in NR on
// exit, the return value for r3 in Ret, r4..r12 in Args (both ways:
// KVM loads Args back into r4..r12 on the next KVM_RUN).
type kvmRunPAPRHcall struct {
	NR, Ret uint64
	Args    [9]uint64
}

// kvmRunMMIO is kvm_run.mmio.
type kvmRunMMIO struct {
	PhysAddr uint64
	Data     [8]byte
	Len      uint32
	IsWrite  uint8
}

// htabShiftFor is the hash page table size QEMU picks for a RAM size:
// about 1/128 of RAM, at least 256 KiB (shift 18), at most 2^46.
func htabShiftFor(ram uint64) uint32 {
	shift := uint32(18)
	for shift < 46 && uint64(1)<<(shift+7) < ram {
		shift++
	}
	return shift
}
