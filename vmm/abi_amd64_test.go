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
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", name, c.got, c.want)
		}
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
