//go:build amd64

// Package pcqmp serves QMP for a PC: Adapter implements qmp.Machine over a
// *pc.Machine, turning QMP commands into calls on the machine, its device
// manager and its block-node registry, and their results into QMP's
// replies and error classes. machine/pc itself knows nothing of QMP.
package pcqmp

import (
	"errors"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/devices/virtio"
	vnet "github.com/petrel-vmm/petrel/devices/virtio/net"
	"github.com/petrel-vmm/petrel/machine/devmgr"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/qmp"
)

// Adapter is a qmp.Machine over one PC.
//
// It holds no state of its own beyond the machine: every answer is read
// from the machine when asked, so QMP never shows a stale view.
type Adapter struct {
	m *pc.Machine
	// quit runs after the machine is told to stop (QMP quit); may be nil.
	quit func()
}

var _ qmp.Machine = (*Adapter)(nil)

// New returns an adapter for m; quit, when not nil, is called by QMP quit
// after the machine has been stopped.
func New(m *pc.Machine, quit func()) *Adapter { return &Adapter{m: m, quit: quit} }

// Status is the QMP run state.
func (a *Adapter) Status() string { return a.m.Status() }

// Stop pauses the vCPUs (QMP stop) and emits STOP. Stopping a paused
// machine succeeds without an event, as in QEMU. The status check and the
// pause are not one atomic step: two stops racing may both emit STOP.
func (a *Adapter) Stop() error {
	switch a.m.Status() {
	case "shutdown":
		return qmp.Errorf("the guest has shut down")
	case "paused":
		return nil
	}
	a.m.Pause()
	a.m.Emit("STOP", nil)
	return nil
}

// Cont resumes the vCPUs (QMP cont) and emits RESUME; cont on a running
// machine succeeds without an event.
func (a *Adapter) Cont() error {
	switch a.m.Status() {
	case "shutdown":
		return qmp.Errorf("the guest has shut down; it cannot continue")
	case "paused":
		a.m.Resume()
		a.m.Emit("RESUME", nil)
	}
	return nil
}

// PowerDown presses the ACPI power button (QMP system_powerdown). It
// returns at once: the guest may shut down, or ignore the button (a guest
// without ACPI does), and then nothing else happens.
func (a *Adapter) PowerDown() error {
	a.m.PressPowerButton()
	a.m.Emit("POWERDOWN", nil)
	return nil
}

// Quit stops the machine at once (QMP quit). It emits nothing: the server
// has already sent SHUTDOWN after the reply.
func (a *Adapter) Quit() {
	a.m.Shutdown()
	if a.quit != nil {
		a.quit()
	}
}

// QueryPCI lists bus 0 as query-pci does.
func (a *Adapter) QueryPCI() []qmp.PCIBus {
	bus := qmp.PCIBus{Bus: 0, Devices: []qmp.PCIDevice{}}
	for _, d := range a.m.PCI().Devices() {
		// d.Class is the 24-bit class code; query-pci's class drops the
		// programming interface byte. IRQPin is left 0 (omitted).
		pd := qmp.PCIDevice{
			Slot:      d.Slot,
			ClassInfo: qmp.PCIClassInfo{Class: int(d.Class >> 8), Desc: classDesc(d.Class >> 8)},
			ID: qmp.PCIID{Device: int(d.DeviceID), Vendor: int(d.VendorID),
				Subsystem: int(d.SubsysID), SubsystemVendor: int(d.SubsysVendor)},
			IRQ:     int(d.IRQ),
			QdevID:  a.m.Devices().ID(d.Slot),
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

// classDesc names a PCI class (base class and subclass) as QEMU's
// query-pci does for the classes Petrel's devices have.
func classDesc(c uint32) string {
	switch c {
	case 0x0600:
		return "Host bridge"
	case 0x0100:
		return "SCSI controller"
	case 0x0200:
		return "Ethernet controller"
	case 0x0500:
		return "RAM controller"
	case 0x0580:
		return "Memory controller"
	}
	return ""
}

// QueryBlock lists the block nodes as query-block does.
func (a *Adapter) QueryBlock() []qmp.BlockInfo {
	out := []qmp.BlockInfo{}
	for _, n := range a.m.Blocks().List() {
		// Every node is listed, those no device uses included (Qdev
		// empty). The guest-visible write cache is always on, hence
		// Writeback; Direct and NoFlush mirror cache.direct/no-flush.
		bi := qmp.BlockInfo{Device: n.Name, Qdev: n.User, Type: "unknown"}
		chain := block.Chain(n.Image)
		ins := &qmp.BlockInserted{
			File: n.File, NodeName: n.Name, RO: n.Image.ReadOnly(), Drv: n.Image.Format(),
			BackingFileDepth: len(chain) - 1,
			Cache:            qmp.BlockCache{Writeback: true, Direct: n.DirectIO, NoFlush: n.NoSync},
			Image:            qmp.ImageInfo{Filename: n.File, Format: n.Image.Format(), VirtualSize: n.Image.Size()},
		}
		if b := n.Image.Backing(); b != nil {
			ins.BackingFile = block.Filename(b)
		}
		bi.Inserted = ins
		out = append(out, bi)
	}
	return out
}

// DeviceAdd hot-plugs a device (QMP device_add).
func (a *Adapter) DeviceAdd(spec qemuopt.DeviceSpec) error {
	if _, err := a.m.Devices().AddDevice(spec, true); err != nil {
		return qmp.Errorf("%v", err)
	}
	return nil
}

// DeviceDel asks the guest to eject a device (QMP device_del); the
// DEVICE_DELETED event follows when the guest ejects it.
func (a *Adapter) DeviceDel(id string) error { return byID(id, a.m.Devices().Unplug(id)) }

// byID turns a device manager error about id into QMP's: DeviceNotFound
// for an unknown id, GenericError otherwise.
func byID(id string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, devmgr.ErrDeviceNotFound):
		return qmp.DeviceNotFound(id)
	}
	return qmp.Errorf("%v", err)
}

// BlockdevAdd opens an image as a named node (QMP blockdev-add).
func (a *Adapter) BlockdevAdd(spec qemuopt.BlockdevSpec) error {
	if err := a.m.Blocks().Open(spec, false); err != nil {
		return qmp.Errorf("%v", err)
	}
	return nil
}

// QueryRxFilter reports each virtio-net device's receive filter as the
// driver programmed it (QMP query-rx-filter). NICs are named by qdev id,
// which is QEMU's net client name for a device given an id; an unnamed NIC
// is listed with an empty name and cannot be asked for by name.
func (a *Adapter) QueryRxFilter(name string) ([]qmp.RxFilterInfo, error) {
	var out []qmp.RxFilterInfo
	for _, d := range a.m.PCI().Devices() {
		p, ok := a.m.PCI().Device(d.Slot).(*virtio.PCI)
		if !ok {
			continue
		}
		n, ok := p.Backend().(*vnet.Net)
		id := a.m.Devices().ID(d.Slot)
		if !ok || (name != "" && id != name) {
			continue
		}
		f := n.Filter()
		info := qmp.RxFilterInfo{Name: id, Promiscuous: f.Promisc, Multicast: "normal", Unicast: "normal",
			VLAN: "none", BroadcastAllowed: true, MulticastOverflow: f.MultiOverflow, UnicastOverflow: f.UniOverflow,
			MainMAC: vnet.FormatMAC(f.MAC), VLANTable: []int{}, UnicastTable: []string{}, MulticastTable: []string{}}
		if f.Allmulti {
			info.Multicast = "all"
		}
		for _, m := range f.Unicast {
			info.UnicastTable = append(info.UnicastTable, vnet.FormatMAC(m))
		}
		for _, m := range f.Multicast {
			info.MulticastTable = append(info.MulticastTable, vnet.FormatMAC(m))
		}
		out = append(out, info)
	}
	if name != "" && len(out) == 0 {
		return nil, qmp.Errorf("invalid net client name: %s", name)
	}
	return out, nil
}

// NetdevAdd opens a network backend (QMP netdev_add).
func (a *Adapter) NetdevAdd(spec qemuopt.NetdevSpec) error {
	if err := a.m.Devices().AddNetdev(spec); err != nil {
		return qmp.Errorf("%v", err)
	}
	return nil
}

// NetdevDel closes a network backend no device uses (QMP netdev_del).
func (a *Adapter) NetdevDel(id string) error { return byID(id, a.m.Devices().DelNetdev(id)) }

// BlockdevDel closes a node no device uses (QMP blockdev-del).
func (a *Adapter) BlockdevDel(name string) error {
	if err := a.m.Blocks().Delete(name); err != nil {
		return qmp.Errorf("%v", err)
	}
	return nil
}
