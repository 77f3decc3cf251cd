package vmm

import (
	"testing"
	"unsafe"
)

// TestIoctlNumbers checks the x86 ioctl numbers against the values of
// linux/kvm.h on x86-64, and the argument structures against their sizes.
func TestIoctlNumbers(t *testing.T) {
	for name, c := range map[string]struct{ got, want uintptr }{
		"KVM_RUN":                    {ioctlRun, 0xae80},
		"KVM_SET_USER_MEMORY_REGION": {ioctlSetUserMemoryRegion, 0x4020ae46},
		"KVM_GET_SUPPORTED_CPUID":    {ioctlGetSupportedCPUID, 0xc008ae05},
		"KVM_IRQFD":                  {ioctlIrqfd, 0x4020ae76},
		"KVM_IOEVENTFD":              {ioctlIoeventfd, 0x4040ae79},
		"KVM_SIGNAL_MSI":             {ioctlSignalMSI, 0x4020aea5},
		"KVM_SET_GSI_ROUTING":        {ioctlSetGSIRouting, 0x4008ae6a},
		"KVM_GET_REGS":               {ioctlGetRegs, 0x8090ae81},
		"KVM_SET_SREGS":              {ioctlSetSregs, 0x4138ae84},
		"KVM_GET_IRQCHIP":            {ioctlGetIRQChip, 0xc208ae62},
		"KVM_SET_IRQCHIP":            {ioctlSetIRQChip, 0x8208ae63},
		"KVM_CHECK_EXTENSION":        {ioctlCheckExtension, 0xae03},
		// Machine reset (state_amd64.go); values from the installed linux/kvm.h.
		"KVM_GET_MSR_INDEX_LIST": {ioctlGetMSRIndexList, 0xc004ae02},
		"KVM_GET_MSRS":           {ioctlGetMSRs, 0xc008ae88},
		"KVM_SET_MSRS":           {ioctlSetMSRs, 0x4008ae89},
		"KVM_GET_FPU":            {ioctlGetFPU, 0x81a0ae8c},
		"KVM_SET_FPU":            {ioctlSetFPU, 0x41a0ae8d},
		"KVM_GET_LAPIC":          {ioctlGetLAPIC, 0x8400ae8e},
		"KVM_SET_LAPIC":          {ioctlSetLAPIC, 0x4400ae8f},
		"KVM_GET_MP_STATE":       {ioctlGetMPState, 0x8004ae98},
		"KVM_SET_MP_STATE":       {ioctlSetMPState, 0x4004ae99},
		"KVM_GET_VCPU_EVENTS":    {ioctlGetVCPUEvents, 0x8040ae9f},
		"KVM_SET_VCPU_EVENTS":    {ioctlSetVCPUEvents, 0x4040aea0},
		"KVM_GET_DEBUGREGS":      {ioctlGetDebugRegs, 0x8080aea1},
		"KVM_SET_DEBUGREGS":      {ioctlSetDebugRegs, 0x4080aea2},
		"KVM_GET_XCRS":           {ioctlGetXCRs, 0x8188aea6},
		"KVM_SET_XCRS":           {ioctlSetXCRs, 0x4188aea7},
		"KVM_GET_PIT2":           {ioctlGetPIT2, 0x8070ae9f},
		"KVM_SET_PIT2":           {ioctlSetPIT2, 0x4070aea0},
		// savevm/loadvm (state_amd64.go).
		"KVM_GET_XSAVE":  {ioctlGetXSAVE, 0x9000aea4},
		"KVM_SET_XSAVE":  {ioctlSetXSAVE, 0x5000aea5},
		"KVM_GET_XSAVE2": {ioctlGetXSAVE2, 0x9000aecf},
		"KVM_GET_CLOCK":  {ioctlGetClock, 0x8030ae7c},
		"KVM_SET_CLOCK":  {ioctlSetClock, 0x4030ae7b},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", name, c.got, c.want)
		}
	}
	if unsafe.Sizeof(msrEntry{}) != 24 || unsafe.Sizeof(ClockState{}.data) != 48 || unsafe.Sizeof(IRQChipState{}.pit) != 112 {
		t.Fatal("kvm_msrs (one entry), kvm_clock_data or kvm_pit_state2 differ from the kernel's sizes")
	}
	if unsafe.Sizeof(kvmIoeventfd{}) != 64 || unsafe.Sizeof(kvmIrqfd{}) != 32 || unsafe.Sizeof(kvmMSI{}) != 32 ||
		unsafe.Sizeof(kvmIRQChip{}) != 520 || unsafe.Sizeof(Regs{}) != 144 || unsafe.Sizeof(Sregs{}) != 312 || unsafe.Sizeof(kvmPitConfig{}) != 64 || unsafe.Sizeof(kvmUserspaceMemoryRegion{}) != 32 {
		t.Fatal("ioctl argument structs differ from the kernel's sizes")
	}
	var sr Sregs
	if unsafe.Sizeof(Segment{}) != 24 || unsafe.Sizeof(Descriptor{}) != 16 || unsafe.Offsetof(sr.GDT) != 192 ||
		unsafe.Offsetof(sr.CR0) != 224 || unsafe.Offsetof(sr.EFER) != 264 || unsafe.Offsetof(sr.InterruptBitmap) != 280 {
		t.Fatal("kvm_sregs layout differs from the kernel's")
	}
}
