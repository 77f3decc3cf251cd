//go:build amd64

package pc

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/vmm"
)

// cpuidLeaf1Guest executes CPUID leaf 1 and prints ECX and EBX (4 bytes
// each) on COM1.
var cpuidLeaf1Guest = concat([]byte{
	0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
	0x31, 0xc9, // xor ecx, ecx
	0x0f, 0xa2, // cpuid
	0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
	0x89, 0xc8, // mov eax, ecx
	0xee, 0xc1, 0xe8, 0x08, 0xee, 0xc1, 0xe8, 0x08, 0xee, 0xc1, 0xe8, 0x08, 0xee, // 4 bytes of eax
	0x89, 0xd8, // mov eax, ebx
	0xee, 0xc1, 0xe8, 0x08, 0xee, 0xc1, 0xe8, 0x08, 0xee, 0xc1, 0xe8, 0x08, 0xee,
}, acpiPowerOff, hlt)

// guestLeaf1 boots the CPUID guest and returns what it saw, and the
// features the host overrode.
func guestLeaf1(t *testing.T, cfg Config) (ecx, ebx uint32, overridden []string) {
	t.Helper()
	testutil.NeedKVM(t)
	var serial bytes.Buffer
	cfg.KernelBytes = pvhELF(cpuidLeaf1Guest, 0x100000)
	cfg.MemoryMiB = 16
	cfg.Serial = &serial
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Run(context.Background())
	if err != nil || r != ExitPowerOff || serial.Len() != 8 {
		t.Fatalf("run: %v, %v, serial %q", r, err, serial.String())
	}
	b := serial.Bytes()
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), m.cpus.overrides
}

// checkLeaf1 checks that a leaf 1 ECX feature is in the requested state in
// the guest, unless the host overrode it and Petrel reported that.
func checkLeaf1(t *testing.T, ecx uint32, overridden []string, name string, want bool) {
	t.Helper()
	f := vmm.Features[name]
	got := ecx&(1<<f.Bit) != 0
	if slices.Contains(overridden, name) {
		t.Logf("%s: the host overrides it (guest sees %v); Petrel reported that", name, got)
		if got == want {
			t.Errorf("%s reported as overridden but the guest sees the requested state", name)
		}
		return
	}
	if got != want {
		t.Errorf("%s = %v in the guest, want %v", name, got, want)
	}
}

// TestCPUIDInsideGuest reads CPUID leaf 1 from inside a guest: the
// hypervisor bit, APIC id and CPU count, kvm_pvm's hidden features, and
// -cpu overrides all show, except where the host forces a bit (which
// vcpuSet.overrides must then list).
func TestCPUIDInsideGuest(t *testing.T) {
	ecx, ebx, ov := guestLeaf1(t, Config{CPUs: 3})
	t.Logf("leaf 1 ECX %#x EBX %#x; host overrides: %v", ecx, ebx, ov)
	if ebx>>24 != 0 || (ebx>>16)&0xff != 3 {
		t.Errorf("EBX %#x: want APIC id 0 of 3 logical CPUs", ebx)
	}
	checkLeaf1(t, ecx, ov, "hypervisor", true)
	if vmm.DetectPVM() {
		for _, n := range []string{"cx16", "xsave", "osxsave", "avx"} {
			checkLeaf1(t, ecx, ov, n, false)
		}
		if slices.Contains(ov, "cx16") {
			t.Error("cx16 cannot be hidden on this host")
		}
	}
	ecx, _, ov = guestLeaf1(t, Config{CPU: "host,-x2apic,-hypervisor"})
	checkLeaf1(t, ecx, ov, "x2apic", false)
	checkLeaf1(t, ecx, ov, "hypervisor", false)
	ecx, _, ov = guestLeaf1(t, Config{CPU: "host,+cx16"})
	checkLeaf1(t, ecx, ov, "cx16", true)
}
