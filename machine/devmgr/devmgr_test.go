package devmgr

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/machine/blocknodes"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// host maps nothing: BARs stay undecoded in these tests.
type host struct{}

func (host) MapBAR(pci.Mapping) error   { return nil }
func (host) UnmapBAR(pci.Mapping) error { return nil }

type line struct{}

func (line) SetLevel(bool) {}

type hotplug struct{ up, down uint32 }

func (h *hotplug) Plug(slot int) error        { h.up |= 1 << slot; return nil }
func (h *hotplug) Unplug(slot int) error      { h.down |= 1 << slot; return nil }
func (h *hotplug) Pending() (up, down uint32) { return h.up, h.down }

type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) emit(ev string, data any) {
	e.mu.Lock()
	e.got = append(e.got, fmt.Sprint(ev, data))
	e.mu.Unlock()
}

func newManager(t *testing.T) (*Manager, *pci.Bus, *hotplug, *blocknodes.Registry, *events) {
	t.Helper()
	mem := guestmem.New()
	if err := mem.Add(0, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	bus := pci.NewBus(host{}, pci.Windows{
		IO:    pci.Window{Base: 0xc000, Size: 0x4000},
		Mem32: pci.Window{Base: 0xc000_0000, Size: 0x3c00_0000},
	})
	hp := &hotplug{}
	blocks := blocknodes.New()
	ev := &events{}
	m := New(Platform{Bus: bus, Hotplug: hp, Mem: mem, IRQ: func(int) pci.IRQLine { return line{} },
		Blocks: blocks, Events: ev.emit})
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		blocks.Close()
	})
	return m, bus, hp, blocks, ev
}

func rawFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAddDeviceHotplugAndEject(t *testing.T) {
	m, bus, hp, blocks, ev := newManager(t)
	if err := blocks.Open(qemuopt.BlockdevSpec{NodeName: "n1", Format: "raw", Filename: rawFile(t)}, false); err != nil {
		t.Fatal(err)
	}
	// Cold plug: first free slot, no hotplug notification.
	slot, err := m.AddDevice(qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "cold", Slot: -1, File: rawFile(t)}, false)
	if err != nil || slot != 1 || hp.up != 0 {
		t.Fatalf("cold plug: slot %d, %v, up %#x", slot, err, hp.up)
	}
	slot, err = m.AddDevice(qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "hot", Slot: 6, Drive: "n1"}, true)
	if err != nil || slot != 6 || hp.up != 1<<6 || m.ID(6) != "hot" || bus.Device(6) == nil {
		t.Fatalf("hot plug: slot %d, %v, up %#x", slot, err, hp.up)
	}
	for name, c := range map[string]struct {
		spec qemuopt.DeviceSpec
		want string
	}{
		"dup id":    {qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "hot", Slot: -1, Drive: "n1"}, "Duplicate device ID"},
		"busy slot": {qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "x", Slot: 6, File: "/nonexistent"}, "in use"},
		"node busy": {qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "x", Slot: -1, Drive: "n1"}, "in use by a device"},
		"no node":   {qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "x", Slot: -1, Drive: "nope"}, "nope"},
		"no file":   {qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "x", Slot: -1, File: "/nonexistent"}, "nonexistent"},
		"memdev":    {qemuopt.DeviceSpec{Driver: "ivshmem-plain", ID: "x", Slot: -1, Memdev: "m"}, "names no -object"},
		"chardev":   {qemuopt.DeviceSpec{Driver: "ivshmem-doorbell", ID: "x", Slot: -1, Chardev: "c"}, "names no -chardev"},
		"model":     {qemuopt.DeviceSpec{Driver: "e1000", Slot: -1}, "not a valid device model"},
		"slot 0":    {qemuopt.DeviceSpec{Driver: "virtio-blk-pci", Slot: 0, Drive: "n1"}, "cannot take"},
	} {
		if _, err := m.AddDevice(c.spec, true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	if got := len(blocks.List()); got != 2 {
		t.Fatalf("%d nodes after the refusals, want 2 (n1 and #cold)", got)
	}
	if err := m.Unplug("ghost"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("unplug ghost: %v", err)
	}
	if err := m.Unplug("hot"); err != nil || hp.down != 1<<6 {
		t.Fatalf("unplug: %v, down %#x", err, hp.down)
	}
	if err := m.Unplug("hot"); err == nil {
		t.Fatal("second unplug request accepted")
	}
	hp.down = 0 // the guest read the request and ejects
	m.Ejected(6)
	if bus.Device(6) != nil {
		t.Fatal("the device is still on the bus after the eject")
	}
	m.Ejected(6) // a repeated eject is ignored
	m.WaitEjects()
	if len(ev.got) != 1 || !strings.Contains(ev.got[0], "DEVICE_DELETED") || !strings.Contains(ev.got[0], "device:hot") {
		t.Fatalf("events %q", ev.got)
	}
	if m.ID(6) != "" {
		t.Fatal("slot 6 still has an id")
	}
	// n1 is free again, and slot 6 can take a device.
	if _, err := m.AddDevice(qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: "again", Slot: 6, Drive: "n1"}, true); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceDeletedPaths: DEVICE_DELETED carries QEMU's QOM paths: a named
// device's /machine/peripheral/ID with "device", an unnamed one's
// /machine/peripheral-anon/device[N] alone, N being the lowest index no
// living unnamed device holds (QOM's "device[*]").
func TestDeviceDeletedPaths(t *testing.T) {
	m, _, _, _, ev := newManager(t)
	add := func(id string, slot int) {
		t.Helper()
		if _, err := m.AddDevice(qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: id, Slot: slot, File: rawFile(t)}, false); err != nil {
			t.Fatal(err)
		}
	}
	add("", 3)      // device[0]
	add("named", 4) // /machine/peripheral/named
	add("", 5)      // device[1]
	for _, slot := range []int{5, 4} {
		m.Ejected(slot)
		m.WaitEjects()
	}
	add("", 6) // device[1] again: free since slot 5's eject
	for _, slot := range []int{6, 3} {
		m.Ejected(slot)
		m.WaitEjects()
	}
	want := []string{
		"DEVICE_DELETEDmap[path:/machine/peripheral-anon/device[1]]",
		"DEVICE_DELETEDmap[device:named path:/machine/peripheral/named]",
		"DEVICE_DELETEDmap[path:/machine/peripheral-anon/device[1]]",
		"DEVICE_DELETEDmap[path:/machine/peripheral-anon/device[0]]",
	}
	if strings.Join(ev.got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(ev.got, "\n"), strings.Join(want, "\n"))
	}
}
