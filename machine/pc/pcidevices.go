package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/devices/pci"
)

// PCIPlumbing is what a PCI device built outside machine/pc (ivshmem, for
// one) gets from the machine for the slot it is plugged into.
type PCIPlumbing struct {
	Slot     int
	Router   pci.EventRouter // irqfds, ioeventfds, MSI routes (the VM)
	Signaler pci.MSISignaler // KVM_SIGNAL_MSI (the VM)
	IRQ      pci.IRQLine     // the slot's INTA# (IOAPIC GSI pci.INTxGSI(slot))
}

// AddPCIDevice builds a device with build and plugs it into slot (0 picks
// the first free slot) under the qdev id (may be empty). It is meant for
// boot-time devices, before Run. A device that cannot be plugged is
// released; Close releases the others.
func (m *Machine) AddPCIDevice(id string, slot int, build func(PCIPlumbing) (pci.Device, error)) (int, error) {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	if id != "" {
		for _, other := range m.deviceIDs {
			if other == id {
				return 0, fmt.Errorf("duplicate device id %q", id)
			}
		}
	}
	if slot == 0 {
		if slot = m.pci.FreeSlot(); slot < 0 {
			return 0, fmt.Errorf("device %q: no free PCI slot", id)
		}
	}
	if slot < 1 || slot >= pci.NumSlots {
		return 0, fmt.Errorf("device %q: PCI slot %d out of range 1..%d", id, slot, pci.NumSlots-1)
	}
	if m.pci.Device(slot) != nil {
		return 0, fmt.Errorf("device %q: PCI slot %d is in use", id, slot)
	}
	dev, err := build(PCIPlumbing{Slot: slot, Router: m.vm, Signaler: m.vm, IRQ: m.vm.IRQLine(pci.INTxGSI(slot))})
	if err != nil {
		return 0, err
	}
	if err := m.pci.Add(slot, dev); err != nil {
		if r, ok := dev.(pci.Releaser); ok {
			r.Release()
		}
		return 0, fmt.Errorf("device %q: adding to slot %d: %w", id, slot, err)
	}
	m.deviceIDs[slot] = id
	return slot, nil
}
