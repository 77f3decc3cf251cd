//go:build amd64

package pc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/qemuopt"
)

func rawDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestACPITablesAndDisksWired(t *testing.T) {
	testutil.NeedKVM(t)
	disk := rawDisk(t, 1<<20)
	var events []string
	m, err := New(Config{MemoryMiB: 32, CPUs: 2, KernelBytes: pvhELF(hlt, 0x100000),
		Disks:  []DiskConfig{{Path: disk, Format: "raw", ID: "d0"}},
		Events: func(e string, _ any) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Status() != "prelaunch" {
		t.Fatalf("status %q before Run", m.Status())
	}
	m.PressPowerButton()
	if sts, _ := m.board.gpe.Status(); sts&(1<<2) == 0 {
		t.Fatalf("power button: GPE0 status %#x", sts)
	}
	rsdp, err := m.mem.Uint64(pvhStartInfo + 32)
	if err != nil || rsdp == 0 {
		t.Fatalf("rsdp_paddr %#x, %v", rsdp, err)
	}
	sig := make([]byte, 8)
	m.mem.Read(rsdp, sig)
	if string(sig) != "RSD PTR " {
		t.Fatalf("no RSDP at %#x: %q", rsdp, sig)
	}
	devs := m.PCI().Devices()
	if len(devs) != 2 {
		t.Fatalf("pci devices %+v", devs)
	}
	hb, vb := devs[0], devs[1]
	if hb.Slot != 0 || hb.VendorID != 0x8086 || hb.DeviceID != 0x1237 || hb.Class>>8 != 0x0600 {
		t.Fatalf("host bridge %+v", hb)
	}
	if vb.Slot != 1 || vb.VendorID != 0x1af4 || vb.DeviceID != 0x1042 || m.Devices().ID(1) != "d0" {
		t.Fatalf("virtio-blk %+v id %q", vb, m.Devices().ID(1))
	}
	bl := m.Blocks().List()
	if len(bl) != 1 || bl[0].Name != "d0" || bl[0].User != "d0" || bl[0].Image.Size() != 1<<20 {
		t.Fatalf("block nodes %+v", bl)
	}

	// A named node + a device using it, then an unplug request (the guest
	// never ejects here, so the slot stays) and the error cases.
	disk2 := rawDisk(t, 2<<20)
	if err := m.Blocks().Open(qemuopt.BlockdevSpec{NodeName: "n1", Format: "raw", Filename: disk2}, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Blocks().Open(qemuopt.BlockdevSpec{NodeName: "n1", Format: "raw", Filename: disk2}, false); err == nil {
		t.Fatal("duplicate node accepted")
	}
	if _, err := m.Devices().AddDevice(qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "v1", Slot: 5, Drive: "n1"}, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Blocks().Delete("n1"); err == nil {
		t.Fatal("deleting a node in use accepted")
	}
	for name, req := range map[string]qemuopt.DeviceSpec{
		"busy slot":  {Driver: "virtio-blk-pci", ID: "v2", Slot: 5, Drive: "n1"},
		"dup id":     {Driver: "virtio-blk-pci", ID: "v1", Slot: 6, File: disk2},
		"no drive":   {Driver: "virtio-blk-pci", ID: "v3", Slot: 6},
		"bad driver": {Driver: "e1000", ID: "v4", Slot: -1},
		"node busy":  {Driver: "virtio-blk-pci", ID: "v5", Slot: 7, Drive: "n1"},
		"slot 0":     {Driver: "virtio-blk-pci", ID: "v6", Slot: 0, Drive: "n1"},
	} {
		if _, err := m.Devices().AddDevice(req, true); err == nil {
			t.Errorf("%s: device added", name)
		}
	}
	if m.PCI().Device(6) != nil || m.PCI().Device(7) != nil {
		t.Fatal("a refused device is on the bus")
	}
	if err := m.Devices().Unplug("v1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Devices().Unplug("v1"); err == nil {
		t.Fatal("a second unplug request accepted")
	}
	if err := m.Devices().Unplug("nosuch"); err == nil {
		t.Fatal("unplug of an unknown id accepted")
	}
	// The guest ejects slot 5 (as its _EJ0 would): the device leaves the
	// bus at once; a worker releases it, emits DEVICE_DELETED and frees
	// the node.
	m.Devices().Ejected(5)
	if m.PCI().Device(5) != nil {
		t.Fatal("slot 5 still has a device after the eject")
	}
	m.Devices().WaitEjects()
	if len(events) == 0 || events[len(events)-1] != "DEVICE_DELETED" {
		t.Fatalf("eject: events %v", events)
	}
	if err := m.Blocks().Delete("n1"); err != nil {
		t.Fatalf("deleting the node after the eject: %v", err)
	}
}
