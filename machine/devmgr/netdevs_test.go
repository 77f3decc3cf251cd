package devmgr

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/qemuopt"
)

// A user-mode netdev, a virtio-net device hot-plugged on it, the netdev
// refused to a second device and to netdev_del while in use, and free
// again once the guest ejected the device.
func TestNetdevAndVirtioNet(t *testing.T) {
	m, bus, hp, _, ev := newManager(t)
	if err := m.AddNetdev(qemuopt.NetdevSpec{Type: "user", ID: "n0", Net: netip.MustParsePrefix("10.0.2.0/24"),
		HostFwd: []string{"tcp:127.0.0.1:0-:22"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddNetdev(qemuopt.NetdevSpec{Type: "user", ID: "n0"}); err == nil {
		t.Fatal("duplicate netdev accepted")
	}
	for _, bad := range []qemuopt.DeviceSpec{
		{Driver: "virtio-net-pci", Slot: -1, Netdev: "nope"},
		{Driver: "virtio-net-pci", Slot: -1, Netdev: "n0", MAC: "01:00:00:00:00:01"},
		{Driver: "virtio-net-pci", Slot: -1, Netdev: "n0", MAC: "52:54:00"},
	} {
		if _, err := m.AddDevice(bad, true); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
	slot, err := m.AddDevice(qemuopt.DeviceSpec{Driver: "virtio-net-pci", ID: "nic0", Slot: 5, Netdev: "n0"}, true)
	if err != nil {
		t.Fatal(err)
	}
	d := bus.Device(slot)
	if d == nil || d.Config().Uint16(2) != 0x1041 || hp.up&(1<<5) == 0 {
		t.Fatalf("slot %d: device %v, hotplug %#x", slot, d, hp.up)
	}
	if _, err := m.AddDevice(qemuopt.DeviceSpec{Driver: "virtio-net-pci", ID: "nic1", Slot: -1, Netdev: "n0"}, true); err == nil ||
		!strings.Contains(err.Error(), "in use") {
		t.Fatalf("second device on n0: %v", err)
	}
	if err := m.DelNetdev("n0"); err == nil {
		t.Fatal("netdev_del of a netdev in use accepted")
	}
	if err := m.Unplug("nic0"); err != nil {
		t.Fatal(err)
	}
	m.Ejected(slot)
	m.WaitEjects()
	if len(ev.got) != 1 || !strings.Contains(ev.got[0], "DEVICE_DELETED") {
		t.Fatalf("events %v", ev.got)
	}
	if m.Netdev("n0").Attached() {
		t.Fatal("netdev still attached after the eject")
	}
	if err := m.DelNetdev("n0"); err != nil {
		t.Fatal(err)
	}
	if err := m.DelNetdev("n0"); err == nil {
		t.Fatal("netdev_del of a deleted netdev accepted")
	}
}
