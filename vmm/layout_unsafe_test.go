package vmm

import (
	"testing"
	"unsafe"
)

func TestKvmRunLayout(t *testing.T) {
	// Offsets from linux/kvm.h, the same on every 64-bit architecture.
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
	var p PaprHcall
	if unsafe.Sizeof(p) != 88 || unsafe.Offsetof(p.Args) != 16 {
		t.Fatal("kvm_run.papr_hcall layout differs")
	}
}
