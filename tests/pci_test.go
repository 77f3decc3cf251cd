//go:build amd64

package tests

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// newQcow2 creates a qcow2 image of size with qemu-img.
func newQcow2(t *testing.T, size string) string {
	t.Helper()
	qimg := testutil.NeedTool(t, "qemu-img")
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command(qimg, "create", "-q", "-f", "qcow2", p, size).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	return p
}

// TestPCIEnumeration: the guest scans bus 0 with mechanism 1 and prints
// what it finds; every line must match the VMM's own view (m.PCI()).
func TestPCIEnumeration(t *testing.T) {
	elf := guest.Build(t, "pci_enum.c")
	disk := newQcow2(t, "16M")
	r := runGuest(t, elf, pc.Config{Disks: []pc.DiskConfig{{Path: disk}}})
	mustPass(t, r)

	var want []string
	foundBlk := false
	for _, d := range r.Machine.PCI().Devices() {
		want = append(want, fmt.Sprintf("DEV slot=%d vendor=%04x device=%04x class=%06x rev=%02x",
			d.Slot, d.VendorID, d.DeviceID, d.Class, d.Revision))
		if d.VendorID == 0x1af4 && d.DeviceID == 0x1042 {
			foundBlk = true
		}
		for _, b := range d.BARs {
			want = append(want, fmt.Sprintf("BAR slot=%d index=%d addr=%x size=%x io=%d is64=%d",
				d.Slot, b.Index, b.Addr, b.Size, b2i(b.IO), b2i(b.Is64)))
		}
		cfg := r.Machine.PCI().Device(d.Slot).Config()
		for _, off := range cfg.Capabilities() {
			want = append(want, fmt.Sprintf("CAP slot=%d off=%02x id=%02x", d.Slot, off, cfg.Uint8(off)))
		}
	}
	if !foundBlk {
		t.Fatalf("the VMM has no virtio-blk device (1af4:1042) for the disk")
	}
	var got []string
	for _, l := range strings.Split(r.Serial, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "DEV "), strings.HasPrefix(l, "BAR "):
			got = append(got, l)
		case strings.HasPrefix(l, "CAP "):
			f := strings.Fields(l)
			got = append(got, strings.Join(f[:4], " "))
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Fatalf("guest view differs from the VMM's:\nguest:\n%s\nvmm:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The virtio-blk function must offer the four virtio structures and MSI-X.
	for _, ct := range []string{"cfg_type=1", "cfg_type=2", "cfg_type=3", "cfg_type=4"} {
		if !strings.Contains(r.Serial, ct) {
			t.Errorf("virtio capability %s missing", ct)
		}
	}
	if !strings.Contains(r.Serial, "id=11 table_size=") {
		t.Errorf("no MSI-X capability seen by the guest")
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
