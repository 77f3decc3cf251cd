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
	if err := m.PowerDown(); err != nil {
		t.Fatal(err)
	}
	if sts, _ := m.GPE().Status(); sts&(1<<2) == 0 || events[len(events)-1] != "POWERDOWN" {
		t.Fatalf("power button: GPE0 status %#x, events %v", sts, events)
	}
	rsdp, err := m.Memory().Uint64(pvhStartInfo + 32)
	if err != nil || rsdp == 0 {
		t.Fatalf("rsdp_paddr %#x, %v", rsdp, err)
	}
	sig := make([]byte, 8)
	m.Memory().Read(rsdp, sig)
	if string(sig) != "RSD PTR " {
		t.Fatalf("no RSDP at %#x: %q", rsdp, sig)
	}
	buses := m.QueryPCI()
	if len(buses) != 1 || len(buses[0].Devices) != 2 {
		t.Fatalf("query-pci %+v", buses)
	}
	hb, vb := buses[0].Devices[0], buses[0].Devices[1]
	if hb.Slot != 0 || hb.ID.Vendor != 0x8086 || hb.ID.Device != 0x1237 || hb.ClassInfo.Class != 0x0600 {
		t.Fatalf("host bridge %+v", hb)
	}
	if vb.Slot != 1 || vb.ID.Vendor != 0x1af4 || vb.ID.Device != 0x1042 || vb.QdevID != "d0" {
		t.Fatalf("virtio-blk %+v", vb)
	}
	bl := m.QueryBlock()
	if len(bl) != 1 || bl[0].Device != "d0" || bl[0].Inserted == nil || bl[0].Inserted.Image.VirtualSize != 1<<20 {
		t.Fatalf("query-block %+v", bl)
	}

	// blockdev-add + device_add drive=, then device_del (the guest never
	// ejects here, so the slot stays) and the error cases.
	disk2 := rawDisk(t, 2<<20)
	if err := m.BlockdevAdd(qemuopt.BlockdevSpec{NodeName: "n1", Format: "raw", Filename: disk2}); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockdevAdd(qemuopt.BlockdevSpec{NodeName: "n1", Format: "raw", Filename: disk2}); err == nil {
		t.Fatal("duplicate node accepted")
	}
	if err := m.DeviceAdd(qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "v1", Slot: 5, Drive: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := m.BlockdevDel("n1"); err == nil {
		t.Fatal("blockdev-del of a node in use accepted")
	}
	for name, req := range map[string]qemuopt.DeviceSpec{
		"busy slot":  {Driver: "virtio-blk-pci", ID: "v2", Slot: 5, Drive: "n1"},
		"dup id":     {Driver: "virtio-blk-pci", ID: "v1", Slot: 6, File: disk2},
		"no drive":   {Driver: "virtio-blk-pci", ID: "v3", Slot: 6},
		"bad driver": {Driver: "e1000", ID: "v4", Slot: -1},
		"node busy":  {Driver: "virtio-blk-pci", ID: "v5", Slot: 7, Drive: "n1"},
		"slot 0":     {Driver: "virtio-blk-pci", ID: "v6", Slot: 0, Drive: "n1"},
	} {
		if err := m.DeviceAdd(req); err == nil {
			t.Errorf("%s: device_add accepted", name)
		}
	}
	if err := m.DeviceDel("v1"); err != nil {
		t.Fatal(err)
	}
	if err := m.DeviceDel("nosuch"); err == nil {
		t.Fatal("device_del of an unknown id accepted")
	}
	// The guest ejects slot 5 (as its _EJ0 would): the device leaves the
	// bus, DEVICE_DELETED is emitted and the node is free again.
	m.ejected(5)
	if m.PCI().Device(5) != nil || len(events) == 0 || events[len(events)-1] != "DEVICE_DELETED" {
		t.Fatalf("eject: device %v events %v", m.PCI().Device(5), events)
	}
	if err := m.BlockdevDel("n1"); err != nil {
		t.Fatalf("blockdev-del after eject: %v", err)
	}
}
