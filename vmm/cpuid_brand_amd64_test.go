package vmm

import "testing"

// TestGuestCPUIDHasBrand: KVM's supported CPUID carries no brand string
// (leaves 0x80000002-4 zero or absent, as seen nested); the guest's has
// one, so Linux's "model name" is not empty, and a host brand is kept.
func TestGuestCPUIDHasBrand(t *testing.T) {
	host := []CPUIDEntry{{Function: 0}, {Function: 1}, {Function: 0x80000000, EAX: 0x80000001}, {Function: 0x80000001}}
	es := GuestCPUID(host, 0, CPUIDConfig{CPUs: 1, Brand: "Example CPU @ 3.00GHz"})
	if b := Brand(es); b != "Example CPU @ 3.00GHz" {
		t.Fatalf("brand %q", b)
	}
	for _, e := range es {
		if e.Function == 0x80000000 && e.EAX < 0x80000004 {
			t.Fatalf("max extended leaf %#x does not reach the brand leaves", e.EAX)
		}
	}
	if b := Brand(GuestCPUID(host, 0, CPUIDConfig{})); b != DefaultBrand {
		t.Fatalf("brand without a configured one %q, want %q", b, DefaultBrand)
	}
	long := GuestCPUID(host, 0, CPUIDConfig{Brand: "0123456789012345678901234567890123456789012345678901234"})
	if b := Brand(long); len(b) != 47 {
		t.Fatalf("long brand %q not cut to 47 bytes", b)
	}
	withOwn := GuestCPUID(GuestCPUID(host, 0, CPUIDConfig{Brand: "Host Brand"}), 0, CPUIDConfig{Brand: "Other"})
	if b := Brand(withOwn); b != "Host Brand" {
		t.Fatalf("the host's brand was replaced: %q", b)
	}
	if len(host) != 4 || Brand(host) != "" {
		t.Fatal("host entries modified")
	}
}
