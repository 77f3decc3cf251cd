// Package devmgr is a machine's device manager: it owns PCI bus 0's slots
// and the qdev ids of the devices in them, builds devices from
// qemuopt.DeviceSpec (the command line's -device and QMP's device_add go
// through the same AddDevice), and runs hot-unplug: device_del asks the
// guest, the guest's eject takes the device off the bus at once, and a
// worker goroutine drains and releases it (flushing its disk) before
// DEVICE_DELETED is sent, so the vCPU that wrote _EJ0 never waits on I/O.
//
// The manager also holds what devices refer to by id: memory backends
// (-object) and chardevs (-chardev). Everything here survives a machine
// reset; only Close releases it.
//
// Lock order: Manager.mu, then the pci.Bus lock, then the block registry.
package devmgr

import (
	"errors"
	"fmt"
	"sync"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/machine/blocknodes"
	"github.com/petrel-vmm/petrel/netdev"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// ErrDeviceNotFound is returned by Unplug for an unknown id.
var ErrDeviceNotFound = errors.New("device not found")

// Hotplug is the guest-visible hotplug controller (devices/acpi.Hotplug).
//
// Plug and Unplug only raise the request (the slot's bit in the ACPI PCI
// hotplug registers and a GPE, QEMU docs/specs/acpi_pci_hotplug.txt); the
// guest acts on it later, by rescanning or by writing the slot's eject
// register, which the machine turns into Manager.Ejected.
type Hotplug interface {
	Plug(slot int) error
	Unplug(slot int) error
	// Pending returns the insertion and removal requests the guest has not
	// acted on (one bit per slot).
	Pending() (up, down uint32)
}

// Platform is what the manager needs from its machine.
type Platform struct {
	// Bus is PCI bus 0; slot 0 (the host bridge) belongs to the machine.
	Bus *pci.Bus
	// Hotplug raises plug and unplug requests to the guest; used only for
	// hotplug=true and for Unplug.
	Hotplug Hotplug
	// Mem, Router and Signaler are handed to every device in its Plumbing:
	// guest RAM for DMA, the VM's irqfd/ioeventfd/MSI routing, and
	// KVM_SIGNAL_MSI.
	Mem      *guestmem.Memory
	Router   pci.EventRouter
	Signaler pci.MSISignaler
	// IRQ returns the INTA# line of a slot.
	IRQ func(slot int) pci.IRQLine
	// Blocks lends virtio-blk devices their block nodes; the manager
	// returns a node when its device goes.
	Blocks *blocknodes.Registry
	// Events receives DEVICE_DELETED (may be nil).
	Events func(event string, data any)
	// Logf receives verbose messages (may be nil).
	Logf func(format string, args ...any)
}

// Plumbing is what a device builder gets for the slot it is plugged into.
type Plumbing struct {
	Slot int // 1..pci.NumSlots-1
	// Mem is guest RAM, which the device reaches for DMA (virtqueues).
	Mem      *guestmem.Memory
	Router   pci.EventRouter // irqfds, ioeventfds, MSI routes (the VM)
	Signaler pci.MSISignaler // KVM_SIGNAL_MSI (the VM)
	IRQ      pci.IRQLine     // the slot's INTA# (IOAPIC GSI pci.INTxGSI(slot))
}

// entry is one occupied slot.
type entry struct {
	// id is the qdev id ("" for a device given none, which device_del
	// cannot name).
	id string
	// anon is QEMU's index N of an unnamed device under
	// /machine/peripheral-anon/device[N] (DEVICE_DELETED's path).
	anon int
	// driver is the -device driver, "" for AddPCIDevice's devices.
	driver string
	node   string // block node the device borrowed ("" = none)
	// ejecting: the device is off the bus and a worker is releasing it;
	// the slot stays taken until that finishes.
	ejecting bool
}

// Manager owns bus 0's slots. Its methods are safe for concurrent use.
type Manager struct {
	p Platform // with New's defaults for Events and Logf

	mu sync.Mutex // guards slots, objects, regions, chardevs, netdevs, nics
	// slots holds every slot taken through the manager, ejecting ones
	// included; a device is on the bus iff its entry is not ejecting.
	slots map[int]*entry
	// objects are the -object specs by id; a backend is opened into
	// regions on first use and kept until Close, so a device plugged
	// again into the same memdev sees the same memory.
	objects map[string]qemuopt.ObjectSpec
	regions map[string]*hostmem.Region // opened memory backends
	// chardevs are the -chardev specs by id; only their paths are used.
	chardevs map[string]qemuopt.ChardevSpec
	netdevs  map[string]netdev.Backend // -netdev / netdev_add backends
	nics     int                       // default MACs handed out
	ejects   sync.WaitGroup            // eject workers in flight
}

// New returns a manager over p. The host bridge in slot 0 is the
// machine's own and never managed here.
func New(p Platform) *Manager {
	if p.Events == nil {
		p.Events = func(string, any) {}
	}
	if p.Logf == nil {
		p.Logf = func(string, ...any) {}
	}
	return &Manager{p: p, slots: map[int]*entry{}, objects: map[string]qemuopt.ObjectSpec{},
		regions: map[string]*hostmem.Region{}, chardevs: map[string]qemuopt.ChardevSpec{},
		netdevs: map[string]netdev.Backend{}}
}

// AddObject records a memory backend (-object); it is opened when a device
// first uses it. Its size is checked here (a power of two, as ivshmem's
// BAR2 must be), so that a bad -object fails before any device exists.
func (m *Manager) AddObject(o qemuopt.ObjectSpec) error {
	if err := hostmem.CheckSize(o.Size); err != nil {
		return fmt.Errorf("object %q: %w", o.ID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.objects[o.ID]; dup {
		return fmt.Errorf("duplicate object id %q", o.ID)
	}
	m.objects[o.ID] = o
	return nil
}

// AddChardev records a chardev (-chardev).
func (m *Manager) AddChardev(c qemuopt.ChardevSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.chardevs[c.ID]; dup {
		return fmt.Errorf("duplicate chardev id %q", c.ID)
	}
	m.chardevs[c.ID] = c
	return nil
}

// AddDevice builds spec's device and plugs it in spec.Slot (-1: the first
// free slot). With hotplug the guest is told through the hotplug
// controller; without it the device is there from power-on. It returns the
// slot. Errors use QEMU's wording where QEMU has one.
func (m *Manager) AddDevice(spec qemuopt.DeviceSpec, hotplug bool) (int, error) {
	build, ok := builders[spec.Driver]
	if !ok {
		return 0, fmt.Errorf("'%s' is not a valid device model name", spec.Driver)
	}
	var node string
	slot, err := m.plug(spec.ID, spec.Driver, spec.Slot, hotplug, func(p Plumbing) (pci.Device, error) {
		d, n, err := build(m, spec, p)
		node = n
		return d, err
	}, &node)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", spec.Driver, err)
	}
	return slot, nil
}

// AddPCIDevice plugs a device built by the caller (a test's own device, a
// device from another package) at power-on under id (may be empty) in slot
// (-1: the first free one).
func (m *Manager) AddPCIDevice(id string, slot int, build func(Plumbing) (pci.Device, error)) (int, error) {
	return m.plug(id, "", slot, false, build, nil)
}

// plug reserves a slot, builds the device and adds it to the bus. node,
// when not nil, holds the block node the builder borrowed once it returns;
// it is given back if the device cannot be plugged. build runs with mu
// held, so two plugs cannot race for a slot or an id; it must not call
// back into the Manager (mu is not reentrant).
func (m *Manager) plug(id, driver string, slot int, hotplug bool, build func(Plumbing) (pci.Device, error), node *string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id != "" {
		for _, e := range m.slots {
			if e.id == id {
				return 0, fmt.Errorf("Duplicate device ID '%s'", id)
			}
		}
	}
	if slot < 0 {
		if slot = m.freeSlotLocked(); slot < 0 {
			return 0, fmt.Errorf("no free PCI slot")
		}
	}
	if slot == 0 || slot >= pci.NumSlots {
		return 0, fmt.Errorf("PCI slot %d cannot take a device", slot)
	}
	if m.slots[slot] != nil || m.p.Bus.Device(slot) != nil {
		return 0, fmt.Errorf("PCI: slot %d function 0 not available for %s, in use by another device", slot, id)
	}
	dev, err := build(Plumbing{Slot: slot, Mem: m.p.Mem, Router: m.p.Router, Signaler: m.p.Signaler, IRQ: m.p.IRQ(slot)})
	e := &entry{id: id, driver: driver}
	if id == "" {
		e.anon = m.freeAnonLocked()
	}
	if node != nil {
		e.node = *node
	}
	if err != nil {
		m.returnNode(e)
		return 0, err
	}
	if err := m.p.Bus.Add(slot, dev); err != nil {
		if r, ok := dev.(pci.Releaser); ok {
			r.Release()
		}
		m.returnNode(e)
		return 0, fmt.Errorf("adding to slot %d: %w", slot, err)
	}
	m.slots[slot] = e
	if hotplug {
		if err := m.p.Hotplug.Plug(slot); err != nil {
			delete(m.slots, slot)
			m.p.Bus.Remove(slot)
			m.returnNode(e)
			return 0, fmt.Errorf("notifying the guest of slot %d: %w", slot, err)
		}
	}
	return slot, nil
}

// freeSlotLocked is the lowest slot above 0 with no device and no eject in
// flight, or -1.
func (m *Manager) freeSlotLocked() int {
	for s := 1; s < pci.NumSlots; s++ {
		if m.slots[s] == nil && m.p.Bus.Device(s) == nil {
			return s
		}
	}
	return -1
}

// returnNode gives e's block node back to the registry, which closes it
// if it was opened for the device alone (file=). A failure is only
// logged: the device is gone either way.
func (m *Manager) returnNode(e *entry) {
	if e.node == "" {
		return
	}
	if err := m.p.Blocks.Return(e.node); err != nil {
		m.p.Logf("block node %s: %v", e.node, err)
	}
}

// ID returns the qdev id of the device in slot ("" if none or unnamed).
func (m *Manager) ID(slot int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.slots[slot]; e != nil {
		return e.id
	}
	return ""
}

// Unplug asks the guest to eject device id (QMP device_del). The device
// goes when the guest ejects it (Ejected), and DEVICE_DELETED follows. An
// empty id matches no device: an unnamed device cannot be unplugged this
// way (QEMU's QOM paths are not accepted), though the guest may still
// eject it on its own.
func (m *Manager) Unplug(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for slot, e := range m.slots {
		if id == "" || e.id != id {
			continue
		}
		// QEMU refuses a second request while the guest has not acted on
		// the first; nothing changes.
		if _, down := m.p.Hotplug.Pending(); down&(1<<uint(slot)) != 0 || e.ejecting {
			return fmt.Errorf("Device '%s' is already in the process of unplug", id)
		}
		if err := m.p.Hotplug.Unplug(slot); err != nil {
			return fmt.Errorf("unplugging slot %d: %w", slot, err)
		}
		return nil
	}
	return fmt.Errorf("%w: Device '%s' not found", ErrDeviceNotFound, id)
}

// Ejected is the guest's eject of slot (its _EJ0), called on the vCPU
// thread: the device leaves the bus now, so the guest reads all ones from
// the slot at once, and a worker drains and releases it (queues stopped,
// disk flushed) and then emits DEVICE_DELETED. The slot stays taken until
// the worker is done.
func (m *Manager) Ejected(slot int) {
	m.mu.Lock()
	e := m.slots[slot]
	if e == nil || e.ejecting {
		m.mu.Unlock()
		return
	}
	dev, err := m.p.Bus.Detach(slot)
	if err != nil {
		m.mu.Unlock()
		m.p.Logf("ejecting pci slot %d: %v", slot, err)
		return
	}
	e.ejecting = true
	m.ejects.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.ejects.Done()
		if r, ok := dev.(pci.Releaser); ok {
			if err := r.Release(); err != nil {
				m.p.Logf("releasing the device in pci slot %d: %v", slot, err)
			}
		}
		m.returnNode(e)
		m.mu.Lock()
		delete(m.slots, slot)
		m.mu.Unlock()
		// QEMU's paths: a named device under /machine/peripheral with
		// its id also as "device"; an unnamed one (ejected by the guest
		// on its own) under /machine/peripheral-anon, path only.
		data := map[string]any{"path": fmt.Sprintf("/machine/peripheral-anon/device[%d]", e.anon)}
		if e.id != "" {
			data["path"] = "/machine/peripheral/" + e.id
			data["device"] = e.id
		}
		m.p.Events("DEVICE_DELETED", data)
	}()
}

// freeAnonLocked is the lowest N that no unnamed device on the bus holds:
// QOM adds a child named "device[*]" as the first free device[N], so
// indexes of ejected devices are taken again.
func (m *Manager) freeAnonLocked() int {
	used := map[int]bool{}
	for _, e := range m.slots {
		if e.id == "" {
			used[e.anon] = true
		}
	}
	n := 0
	for used[n] {
		n++
	}
	return n
}

// WaitEjects blocks until every eject in flight has finished.
func (m *Manager) WaitEjects() { m.ejects.Wait() }

// Close releases every device, memory backend and network backend, in that
// order (a device must let go of its backend first). The vCPUs must have
// stopped, so no eject can start; ejects already in flight are waited for.
func (m *Manager) Close() error {
	m.ejects.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for slot, e := range m.slots {
		if err := m.p.Bus.Remove(slot); err != nil {
			errs = append(errs, err)
		}
		m.returnNode(e)
		delete(m.slots, slot)
	}
	for id, r := range m.regions {
		if err := r.Close(); err != nil {
			errs = append(errs, fmt.Errorf("memory backend %q: %w", id, err))
		}
		delete(m.regions, id)
	}
	errs = append(errs, m.closeNetdevsLocked()...)
	return errors.Join(errs...)
}
