package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/blk"
	"github.com/petrel-vmm/petrel/qemuopt"
)

func init() { deviceMakers["virtio-blk-pci"] = addVirtioBlkQMP }

// keepOpen lends a node's image to a device: the device's Release flushes
// but does not close it, so a blockdev-add node outlives device_del as in
// QEMU.
type keepOpen struct{ block.Image }

func (k keepOpen) Close() error { return k.Flush() }

// addVirtioBlk plugs a virtio-blk device serving n into slot. A node the
// device owns (-disk, -drive, device_add file=) is closed with the device;
// a blockdev-add node is only lent.
func (m *Machine) addVirtioBlk(n *blockNode, slot int, serial, qdev string, queues int, owned bool) error {
	img := n.img
	if !owned {
		img = keepOpen{img}
	}
	dev, _, err := blk.NewPCI(img, blk.Options{Serial: serial, NumQueues: queues, ReadOnly: n.img.ReadOnly()}, virtio.Options{
		Mem: m.mem, MSI: m.vm, Router: m.vm, IRQ: m.vm.IRQLine(pci.INTxGSI(slot)),
	})
	if err != nil {
		return fmt.Errorf("virtio-blk for %s: %w", n.file, err)
	}
	if err := m.pci.Add(slot, dev); err != nil {
		dev.Release()
		return fmt.Errorf("adding virtio-blk for %s in slot %d: %w", n.file, slot, err)
	}
	m.blockMu.Lock()
	n.slot, n.qdev, n.owned = slot, qdev, owned
	m.blockMu.Unlock()
	return nil
}

// attachDisks adds a virtio-blk device per configured disk, in slots 1, 2, ...
func (m *Machine) attachDisks() error {
	for i, d := range m.cfg.Disks {
		name := d.ID
		if name == "" {
			name = fmt.Sprintf("disk%d", i)
		}
		n, err := m.openNode(name, d.Path, d.Format, d.ReadOnly, d.DirectIO, d.NoSync)
		if err != nil {
			return err
		}
		slot := m.pci.FreeSlot()
		if slot < 0 {
			return fmt.Errorf("disk %s: no free PCI slot", d.Path)
		}
		if err := m.addVirtioBlk(n, slot, d.Serial, name, 0, true); err != nil {
			return err
		}
		m.devMu.Lock()
		m.deviceIDs[slot] = name
		m.devMu.Unlock()
		m.logf("disk %s (%s, %d MiB) on virtio-blk in slot %d", d.Path, n.img.Format(), n.img.Size()>>20, slot)
	}
	return nil
}

// addVirtioBlkQMP is device_add virtio-blk-pci: drive=NODE (a blockdev-add
// node or a -drive id) or file=PATH[,format=][,readonly=].
func addVirtioBlkQMP(m *Machine, req qemuopt.DeviceSpec, slot int) error {
	var n *blockNode
	owned := false
	switch drive, file := req.Drive, req.File; {
	case drive != "" && file != "":
		return fmt.Errorf("give drive or file, not both")
	case drive != "":
		m.blockMu.Lock()
		n = m.nodes[drive]
		busy := n != nil && n.slot != 0
		m.blockMu.Unlock()
		if n == nil {
			return fmt.Errorf("Property 'virtio-blk-device.drive' can't find value '%s'", drive)
		}
		if busy {
			return fmt.Errorf("Drive '%s' is already in use by another device", drive)
		}
	case file != "":
		name := req.ID
		if name == "" {
			name = fmt.Sprintf("slot%d", slot)
		}
		var err error
		if n, err = m.openNode("#"+name, file, req.Format, req.ReadOnly, false, false); err != nil {
			return err
		}
		owned = true
	default:
		return fmt.Errorf("Property 'drive' is required")
	}
	if err := m.addVirtioBlk(n, slot, req.Serial, req.ID, req.NumQueues, owned); err != nil {
		if owned {
			m.dropNode(n.name, true)
		}
		return err
	}
	return nil
}

// dropNode forgets a node, closing its image when closeImg is set.
func (m *Machine) dropNode(name string, closeImg bool) {
	m.blockMu.Lock()
	n := m.nodes[name]
	delete(m.nodes, name)
	m.blockMu.Unlock()
	if n != nil && closeImg {
		n.img.Close()
	}
}
