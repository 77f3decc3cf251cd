package vmm

import (
	"testing"
	"unsafe"
)

func TestKvmRunLayout(t *testing.T) {
	// Offsets from linux/kvm.h for x86-64.
	var h kvmRunHeader
	if unsafe.Offsetof(h.ExitReason) != 8 || unsafe.Offsetof(h.CR8) != 16 || unsafe.Offsetof(h.ApicBase) != 24 {
		t.Fatal("kvm_run header layout differs from the kernel's")
	}
	var m kvmRunMMIO
	if unsafe.Offsetof(m.Data) != 8 || unsafe.Offsetof(m.Len) != 16 || unsafe.Offsetof(m.IsWrite) != 20 {
		t.Fatal("kvm_run.mmio layout differs")
	}
	var io kvmRunIO
	if unsafe.Offsetof(io.Port) != 2 || unsafe.Offsetof(io.Count) != 4 || unsafe.Offsetof(io.DataOffset) != 8 {
		t.Fatal("kvm_run.io layout differs")
	}
	var s kvmRunSystemEvent
	if unsafe.Offsetof(s.Data) != 8 {
		t.Fatal("kvm_run.system_event layout differs")
	}
	if unsafe.Sizeof(PaprHcall{}) != 88 {
		t.Fatal("kvm_run.papr_hcall layout differs")
	}
}

func TestIoctlNumbers(t *testing.T) {
	// Values from linux/kvm.h on x86-64.
	if unsafe.Sizeof(uintptr(0)) == 8 && iocDirShift == 30 {
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
			"KVM_ENABLE_CAP":             {ioctlEnableCap, 0x4068aea3},
		} {
			if c.got != c.want {
				t.Errorf("%s = %#x, want %#x", name, c.got, c.want)
			}
		}
	}
	if unsafe.Sizeof(kvmIoeventfd{}) != 64 || unsafe.Sizeof(kvmIrqfd{}) != 32 || unsafe.Sizeof(kvmMSI{}) != 32 ||
		unsafe.Sizeof(kvmEnableCap{}) != 104 || unsafe.Sizeof(kvmPitConfig{}) != 64 || unsafe.Sizeof(kvmUserspaceMemoryRegion{}) != 32 {
		t.Fatal("ioctl argument structs differ from the kernel's sizes")
	}
}
