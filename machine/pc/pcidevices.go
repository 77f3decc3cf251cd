//go:build amd64

package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/machine/blocknodes"
	"github.com/petrel-vmm/petrel/machine/devmgr"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// newDeviceManager creates the block-node registry and the device manager
// over PCI bus 0 and the hotplug controller.
func (m *Machine) newDeviceManager() {
	m.blocks = blocknodes.New()
	m.devices = devmgr.New(devmgr.Platform{
		Bus: m.board.pci, Hotplug: m.board.hotplug, Mem: m.mem, Router: m.vm, Signaler: m.vm,
		IRQ:    func(slot int) pci.IRQLine { return m.vm.IRQLine(pci.INTxGSI(slot)) },
		Blocks: m.blocks, Events: m.Emit, Logf: m.logf,
	})
}

// plugConfigured opens the configured block nodes and memory backends and
// plugs the configured devices: -disk/-drive disks first (slots 1, 2, ...),
// then each -device.
func (m *Machine) plugConfigured() error {
	for _, o := range m.cfg.Objects {
		if err := m.devices.AddObject(o); err != nil {
			return err
		}
	}
	for _, c := range m.cfg.Chardevs {
		if err := m.devices.AddChardev(c); err != nil {
			return err
		}
	}
	for _, n := range m.cfg.Netdevs {
		if err := m.devices.AddNetdev(n); err != nil {
			return fmt.Errorf("-netdev %s: %w", n.ID, err)
		}
	}
	for _, b := range m.cfg.Blockdevs {
		if err := m.blocks.Open(b, false); err != nil {
			return fmt.Errorf("-blockdev %s: %w", b.NodeName, err)
		}
	}
	for i, d := range m.cfg.Disks {
		// The node and the device share the name: the -drive id, or diskN.
		name := d.ID
		if name == "" {
			name = fmt.Sprintf("disk%d", i)
		}
		if err := m.blocks.Open(qemuopt.BlockdevSpec{NodeName: name, Format: d.Format, Filename: d.Path,
			ReadOnly: d.ReadOnly, DirectIO: d.DirectIO, NoSync: d.NoSync}, true); err != nil {
			return err
		}
		if d.NoDevice {
			continue
		}
		spec := qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: name, Slot: -1, Drive: name, Serial: d.Serial}
		if _, err := m.devices.AddDevice(spec, false); err != nil {
			return fmt.Errorf("disk %s: %w", d.Path, err)
		}
	}
	for _, d := range m.cfg.Devices {
		if _, err := m.devices.AddDevice(d, false); err != nil {
			return fmt.Errorf("-device %s: %w", d.Driver, err)
		}
	}
	return nil
}

// Devices is the device manager: PCI slots, qdev ids, -device/device_add,
// hot-unplug.
func (m *Machine) Devices() *devmgr.Manager { return m.devices }

// Blocks is the block-node registry.
func (m *Machine) Blocks() *blocknodes.Registry { return m.blocks }

// Emit sends a QMP event (SHUTDOWN, RESET, STOP, RESUME, POWERDOWN,
// DEVICE_DELETED) to Config.Events.
func (m *Machine) Emit(event string, data any) {
	if m.cfg.Events != nil {
		m.cfg.Events(event, data)
	}
}

// Status is the run state with QEMU's names: "prelaunch" before Run,
// "running", "paused", and "shutdown" once Run has returned.
func (m *Machine) Status() string {
	switch {
	case m.state.finished.Load():
		return "shutdown"
	case m.state.paused.Load():
		return "paused"
	case !m.state.started.Load():
		return "prelaunch"
	}
	return "running"
}
