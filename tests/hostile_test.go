//go:build amd64

package tests

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// TestHostileGuest: the guest writes garbage to every device register and
// submits malformed descriptor chains (out-of-RAM and wrapping addresses,
// loops, over-long chains, bad indices, short headers, unnegotiated
// indirect descriptors, huge lengths); the VMM must survive all of it and
// then serve a correct request, polled and by MSI-X, and the disk image
// must stay consistent.
func TestHostileGuest(t *testing.T) {
	elf := guest.Build(t, "hostile.c")
	disk := newQcow2(t, "16M")
	r := runGuest(t, elf, pc.Config{Disks: []pc.DiskConfig{{Path: disk}}})
	mustPass(t, r)
	for _, phase := range []string{"uart", "legacy", "pci-config", "virtio-registers", "chains"} {
		if !strings.Contains(r.Serial, "PHASE "+phase+"\n") {
			t.Errorf("guest did not complete phase %s", phase)
		}
	}
	if !strings.Contains(r.Serial, "FINAL request ok") {
		t.Fatal("the final correct request did not succeed")
	}
	// Every malformed chain must end in an error the guest can see (a used
	// entry with an error status, no completion, or NEEDS_RESET), never a
	// completed request that claims success.
	chainRE := regexp.MustCompile(`(?m)^CHAIN (\S+) used=(-?\d+) len=\d+ status=([0-9a-f]+) device_status=([0-9a-f]+)$`)
	chains := chainRE.FindAllStringSubmatch(r.Serial, -1)
	if len(chains) != 10 {
		t.Fatalf("%d malformed-chain reports, want 10", len(chains))
	}
	for _, c := range chains {
		if c[2] != "-1" && c[3] == "0" {
			t.Errorf("malformed chain %s completed with status OK", c[1])
		}
	}
	if err := r.Machine.Close(); err != nil {
		t.Fatalf("closing the machine: %v", err)
	}
	qimg := testutil.NeedTool(t, "qemu-img")
	if out, err := exec.Command(qimg, "check", disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check after the hostile guest: %v\n%s", err, out)
	}
}
