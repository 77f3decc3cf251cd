package vmm

import "testing"

// hostCPUID is a plausible host's supported CPUID.
func hostCPUID() []CPUIDEntry {
	return []CPUIDEntry{
		{Function: 0, EAX: 0xd},
		{Function: 1, EAX: 0x906ea, EBX: 0x00100800, ECX: 1<<13 | 1<<26 | 1<<28 | 1<<19 | 1<<21, EDX: 0x178bfbff},
		{Function: 4, Index: 0, Flags: cpuidFlagSignificantIndex, EAX: 0x1c004121},
		{Function: 7, Index: 0, Flags: cpuidFlagSignificantIndex, EBX: 1<<5 | 1<<0 | 1<<16},
		{Function: 0xb, Index: 0, Flags: cpuidFlagSignificantIndex, EAX: 1, EBX: 2},
		{Function: 0xd, Index: 0, Flags: cpuidFlagSignificantIndex, EAX: 7, EBX: 0x340},
		{Function: 0xd, Index: 1, Flags: cpuidFlagSignificantIndex, EAX: 1},
		{Function: 0x80000001, ECX: 1, EDX: 1<<26 | 1<<27},
		{Function: 0x80000008, EAX: 0x3030, ECX: 0x7001},
		{Function: 0x1f, Index: 0, Flags: cpuidFlagSignificantIndex, EAX: 1, EBX: 2},
	}
}

func find(es []CPUIDEntry, fn, idx uint32) *CPUIDEntry {
	for i := range es {
		if es[i].Function == fn && (es[i].Flags&cpuidFlagSignificantIndex == 0 || es[i].Index == idx) {
			return &es[i]
		}
	}
	return nil
}

func has(es []CPUIDEntry, name string) bool {
	f := Features[name]
	e := find(es, f.Leaf, f.Subleaf)
	return e != nil && *e.reg(f.Reg)&(1<<f.Bit) != 0
}

func TestGuestCPUIDPVM(t *testing.T) {
	host := hostCPUID()
	es := GuestCPUID(host, 2, CPUIDConfig{CPUs: 4, PVM: true})
	for _, n := range []string{"cx16", "xsave", "avx", "avx2", "osxsave", "avx512f"} {
		if has(es, n) {
			t.Errorf("kvm_pvm guest still has %s", n)
		}
	}
	for _, n := range []string{"sse4_1", "x2apic", "hypervisor", "fsgsbase", "pdpe1gb"} {
		if !has(es, n) {
			t.Errorf("guest lost %s", n)
		}
	}
	if find(es, 0xd, 0) != nil {
		t.Error("leaf 0xd kept without xsave")
	}
	l1 := find(es, 1, 0)
	if l1.EBX>>24 != 2 || (l1.EBX>>16)&0xff != 4 {
		t.Errorf("leaf 1 EBX %#x: want APIC id 2, 4 logical CPUs", l1.EBX)
	}
	if l1.EBX&0xffff != 0x0800 {
		t.Errorf("leaf 1 EBX low bits changed: %#x", l1.EBX)
	}
	b0, b1 := find(es, 0xb, 0), find(es, 0xb, 1)
	if b0 == nil || b1 == nil || b0.EDX != 2 || b1.EDX != 2 || b1.EBX != 4 || b1.EAX != 2 || b1.ECX>>8 != 2 || b0.ECX>>8 != 1 {
		t.Errorf("leaf 0xb topology wrong: %+v %+v", b0, b1)
	}
	if l4 := find(es, 4, 0); l4.EAX>>26 != 3 {
		t.Errorf("leaf 4 cores %d, want 3 (=4-1)", l4.EAX>>26)
	}
	if e := find(es, 0x80000008, 0); e.ECX&0xff != 3 || (e.ECX>>12)&0xf != 2 || e.EAX != 0x3030 {
		t.Errorf("leaf 0x80000008 %+v: want 4 cores, 2 APIC id bits", e)
	}
	if find(es, 0x1f, 0) != nil {
		t.Error("leaf 0x1f kept with the host's topology")
	}
	// The host table is not modified.
	if host[1].ECX&(1<<13) == 0 {
		t.Error("GuestCPUID modified its input")
	}
}

func TestGuestCPUIDNoPVMAndUserFlags(t *testing.T) {
	es := GuestCPUID(hostCPUID(), 0, CPUIDConfig{CPUs: 1})
	if !has(es, "cx16") || !has(es, "xsave") || find(es, 0xd, 0) == nil {
		t.Fatal("non-PVM host lost cx16/xsave")
	}
	set, clear, err := ParseCPUFlag("host,-cx16,-xsave,+rdrand,avx2=off")
	if err != nil {
		t.Fatal(err)
	}
	es = GuestCPUID(hostCPUID(), 0, CPUIDConfig{CPUs: 1, Set: set, Clear: clear})
	if has(es, "cx16") || has(es, "xsave") || has(es, "avx") || has(es, "avx2") || !has(es, "rdrand") {
		t.Fatalf("user flags not applied: set %v clear %v", set, clear)
	}
	if find(es, 0xd, 0) != nil {
		t.Error("-xsave kept leaf 0xd")
	}
	// +xsave on a PVM host is the user's call.
	es = GuestCPUID(hostCPUID(), 0, CPUIDConfig{CPUs: 1, PVM: true, Set: []string{"xsave"}})
	if !has(es, "xsave") || has(es, "cx16") {
		t.Fatal("+xsave override on PVM not honoured")
	}
}

func TestParseCPUFlagErrors(t *testing.T) {
	for _, s := range []string{"qemu64", "host,-nosuch", "host,+", ""} {
		if _, _, err := ParseCPUFlag(s); err == nil {
			t.Errorf("ParseCPUFlag(%q) accepted", s)
		}
	}
	if _, _, err := ParseCPUFlag("host"); err != nil {
		t.Errorf("host: %v", err)
	}
}

func TestShutdownResetsVCPU(t *testing.T) {
	leaf0 := func(vendor string) []CPUIDEntry {
		b := []byte(vendor)
		u := func(i int) uint32 { return uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24 }
		return []CPUIDEntry{{Function: 0, EAX: 0xd, EBX: u(0), EDX: u(4), ECX: u(8)}}
	}
	for _, c := range []struct {
		vendor string
		pvm    bool
		want   bool
	}{
		{"AuthenticAMD", false, true},
		{"HygonGenuine", false, true},
		{"GenuineIntel", false, false},
		{"AuthenticAMD", true, false},
	} {
		es := leaf0(c.vendor)
		if got := Vendor(es); got != c.vendor {
			t.Errorf("Vendor = %q, want %q", got, c.vendor)
		}
		if got := ShutdownResetsVCPU(es, c.pvm); got != c.want {
			t.Errorf("ShutdownResetsVCPU(%s, pvm %v) = %v, want %v", c.vendor, c.pvm, got, c.want)
		}
	}
	if Vendor(nil) != "" || ShutdownResetsVCPU(nil, false) {
		t.Error("no leaf 0: want no vendor and registers taken as valid")
	}
}
