package pc

import (
	"fmt"
	"sort"

	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/qmp"
)

// The methods below make *Machine a qmp.Machine.
var _ qmp.Machine = (*Machine)(nil)

func (m *Machine) emit(event string, data any) {
	if m.cfg.Events != nil {
		m.cfg.Events(event, data)
	}
}

// Status is the QMP run state.
func (m *Machine) Status() string {
	switch {
	case m.finished.Load():
		return "shutdown"
	case m.paused.Load():
		return "paused"
	case !m.started.Load():
		return "prelaunch"
	}
	return "running"
}

// Stop pauses the vCPUs (QMP stop).
func (m *Machine) Stop() error {
	if m.finished.Load() {
		return qmp.Errorf("the guest has shut down")
	}
	if !m.paused.Load() {
		m.Pause()
		m.emit("STOP", nil)
	}
	return nil
}

// Cont resumes the vCPUs (QMP cont).
func (m *Machine) Cont() error {
	if m.finished.Load() {
		return qmp.Errorf("the guest has shut down; it cannot continue")
	}
	if m.paused.Load() {
		m.Resume()
		m.emit("RESUME", nil)
	}
	return nil
}

// PowerDown presses the ACPI power button (QMP system_powerdown).
func (m *Machine) PowerDown() error {
	m.PressPowerButton()
	m.emit("POWERDOWN", nil)
	return nil
}

// Quit stops the machine at once (QMP quit).
func (m *Machine) Quit() { m.Shutdown() }

// QueryPCI lists bus 0 as query-pci does.
func (m *Machine) QueryPCI() []qmp.PCIBus {
	bus := qmp.PCIBus{Bus: 0, Devices: []qmp.PCIDevice{}}
	for _, d := range m.pci.Devices() {
		pd := qmp.PCIDevice{
			Slot:      d.Slot,
			ClassInfo: qmp.PCIClassInfo{Class: int(d.Class >> 8), Desc: classDesc(d.Class >> 8)},
			ID: qmp.PCIID{Device: int(d.DeviceID), Vendor: int(d.VendorID),
				Subsystem: int(d.SubsysID), SubsystemVendor: int(d.SubsysVendor)},
			IRQ:     int(d.IRQ),
			QdevID:  m.deviceID(d.Slot),
			Regions: []qmp.PCIRegion{},
		}
		for _, b := range d.BARs {
			r := qmp.PCIRegion{Bar: b.Index, Type: "memory", Address: b.Addr, Size: b.Size,
				Prefetch: b.Prefetch, MemType64: b.Is64}
			if b.IO {
				r = qmp.PCIRegion{Bar: b.Index, Type: "io", Address: b.Addr, Size: b.Size}
			}
			pd.Regions = append(pd.Regions, r)
		}
		bus.Devices = append(bus.Devices, pd)
	}
	return []qmp.PCIBus{bus}
}

func classDesc(c uint32) string {
	switch c {
	case 0x0600:
		return "Host bridge"
	case 0x0100:
		return "SCSI controller"
	case 0x0500:
		return "RAM controller"
	case 0x0580:
		return "Memory controller"
	}
	return ""
}

// QueryBlock lists the block devices.
func (m *Machine) QueryBlock() []qmp.BlockInfo {
	out := []qmp.BlockInfo{}
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	names := make([]string, 0, len(m.nodes))
	for n := range m.nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, m.nodes[n].info())
	}
	return out
}

// DeviceAdd hot-plugs a device (QMP device_add).
func (m *Machine) DeviceAdd(req qemuopt.DeviceSpec) error {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	if req.ID != "" {
		for _, id := range m.deviceIDs {
			if id == req.ID {
				return qmp.Errorf("Duplicate device ID '%s'", req.ID)
			}
		}
	}
	slot := req.Slot
	if slot < 0 {
		if slot = m.pci.FreeSlot(); slot < 0 {
			return qmp.Errorf("no free PCI slot")
		}
	}
	if slot == 0 || slot > 31 {
		return qmp.Errorf("PCI slot %d cannot take a device", slot)
	}
	if m.pci.Device(slot) != nil {
		return qmp.Errorf("PCI: slot %d function 0 not available for %s, in use by another device", slot, req.Driver)
	}
	make, ok := deviceMakers[req.Driver]
	if !ok {
		return qmp.Errorf("'%s' is not a valid device model name", req.Driver)
	}
	if err := make(m, req, slot); err != nil {
		return qmp.Errorf("%s: %v", req.Driver, err)
	}
	m.deviceIDs[slot] = req.ID
	if err := m.hotplug.Plug(slot); err != nil {
		m.pci.Remove(slot)
		delete(m.deviceIDs, slot)
		return qmp.Errorf("notifying the guest of slot %d: %v", slot, err)
	}
	return nil
}

// DeviceDel asks the guest to eject a device (QMP device_del); the
// DEVICE_DELETED event follows when the guest ejects it.
func (m *Machine) DeviceDel(id string) error {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	for slot, did := range m.deviceIDs {
		if did == id && id != "" {
			// QEMU refuses a second request while the guest has not
			// acted on the first; nothing changes.
			if _, down := m.hotplug.Pending(); down&(1<<uint(slot)) != 0 {
				return qmp.Errorf("Device '%s' is already in the process of unplug", id)
			}
			if err := m.hotplug.Unplug(slot); err != nil {
				return qmp.Errorf("unplugging slot %d: %v", slot, err)
			}
			return nil
		}
	}
	return qmp.DeviceNotFound(id)
}

// deviceMaker builds and adds one device_add driver's device at slot.
type deviceMaker func(m *Machine, req qemuopt.DeviceSpec, slot int) error

// deviceMakers are the device_add drivers this build has, registered from
// init in virtioblk.go and ivshmem.go; others are refused with QEMU's wording.
var deviceMakers = map[string]deviceMaker{}

// ejected finishes a guest eject: the device leaves the bus, and
// DEVICE_DELETED is emitted.
func (m *Machine) ejected(slot int) {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	id, known := m.deviceIDs[slot]
	if m.pci.Device(slot) == nil {
		return
	}
	if err := m.pci.Remove(slot); err != nil {
		m.logf("ejecting pci slot %d: %v", slot, err)
		return
	}
	delete(m.deviceIDs, slot)
	m.detachNodes(slot)
	data := map[string]any{"path": fmt.Sprintf("/machine/peripheral/%s", id)}
	if known && id != "" {
		data["device"] = id
	}
	m.emit("DEVICE_DELETED", data)
}

func (m *Machine) deviceID(slot int) string {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	return m.deviceIDs[slot]
}
