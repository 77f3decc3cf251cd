//go:build amd64

package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/machine/blocknodes"
	"github.com/petrel-vmm/petrel/machine/devmgr"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// newDeviceManager creates the device manager over PCI bus 0 and the
// hotplug controller, lending devices the nodes of blocks. Its lock comes
// before the bus's and the devices' (docs/ARCHITECTURE.md, lock order).
func newDeviceManager(b *board, vm *vmm.VM, mem *guestmem.Memory, blocks *blocknodes.Registry,
	events func(string, any), logf func(string, ...any)) *devmgr.Manager {
	return devmgr.New(devmgr.Platform{
		Bus: b.pci, Hotplug: b.hotplug, Mem: mem, Router: vm, Signaler: vm,
		// INTx: slot N's INTA# is IOAPIC GSI pci.INTxGSI(N), the rule
		// the DSDT's _PRT states.
		IRQ:    func(slot int) pci.IRQLine { return vm.IRQLine(pci.INTxGSI(slot)) },
		Blocks: blocks, Events: events, Logf: logf,
	})
}

// plugConfigured opens the block nodes, memory backends, chardevs and
// netdevs cfg names and plugs its devices: -disk/-drive disks first
// (slots 1, 2, ...), then each -device. Backends come before the devices
// that name them.
func plugConfigured(cfg Config, devices *devmgr.Manager, blocks *blocknodes.Registry) error {
	for _, o := range cfg.Objects {
		if err := devices.AddObject(o); err != nil {
			return err
		}
	}
	for _, c := range cfg.Chardevs {
		if err := devices.AddChardev(c); err != nil {
			return err
		}
	}
	for _, n := range cfg.Netdevs {
		if err := devices.AddNetdev(n); err != nil {
			return fmt.Errorf("-netdev %s: %w", n.ID, err)
		}
	}
	for _, b := range cfg.Blockdevs {
		if err := blocks.Open(b, false); err != nil {
			return fmt.Errorf("-blockdev %s: %w", b.NodeName, err)
		}
	}
	for i, d := range cfg.Disks {
		// The node and the device share the name: the -drive id, or diskN.
		name := d.ID
		if name == "" {
			name = fmt.Sprintf("disk%d", i)
		}
		// An automatic node (true): the registry closes it when its
		// device goes, as QEMU does for a -drive's BlockBackend.
		if err := blocks.Open(qemuopt.BlockdevSpec{NodeName: name, Format: d.Format, Filename: d.Path,
			ReadOnly: d.ReadOnly, DirectIO: d.DirectIO, NoSync: d.NoSync}, true); err != nil {
			return err
		}
		if d.NoDevice { // -drive if=none: a node for a later -device
			continue
		}
		spec := qemuopt.DeviceSpec{Driver: "virtio-blk-pci", ID: name, Slot: -1, Drive: name, Serial: d.Serial}
		if _, err := devices.AddDevice(spec, false); err != nil {
			return fmt.Errorf("disk %s: %w", d.Path, err)
		}
	}
	for _, d := range cfg.Devices {
		if _, err := devices.AddDevice(d, false); err != nil {
			return fmt.Errorf("-device %s: %w", d.Driver, err)
		}
	}
	return nil
}
