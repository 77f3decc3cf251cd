package devmgr

import (
	"fmt"
	"sort"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/virtio"
	vnet "github.com/petrel-vmm/petrel/devices/virtio/net"
	"github.com/petrel-vmm/petrel/netdev"
	"github.com/petrel-vmm/petrel/netdev/tap"
	"github.com/petrel-vmm/petrel/netdev/user"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// AddNetdev opens a network backend (-netdev, QMP netdev_add). It lives
// until DelNetdev or Close, across the devices that use it.
func (m *Manager) AddNetdev(spec qemuopt.NetdevSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.netdevs[spec.ID]; dup {
		return fmt.Errorf("Duplicate ID '%s' for netdev", spec.ID)
	}
	var be netdev.Backend
	switch spec.Type {
	case "tap":
		t, err := tap.Open(spec.ID, spec.Ifname)
		if err != nil {
			return err
		}
		be = t
	case "user":
		c := user.Config{ID: spec.ID, Net: spec.Net}
		for _, s := range spec.HostFwd {
			f, err := user.ParseHostFwd(s)
			if err != nil {
				return err
			}
			c.HostFwd = append(c.HostFwd, f)
		}
		u, err := user.Open(c)
		if err != nil {
			return err
		}
		be = u
	default:
		return fmt.Errorf("netdev type %q not supported", spec.Type)
	}
	m.netdevs[spec.ID] = be
	m.p.Logf("netdev %s: %s", spec.ID, spec.Type)
	return nil
}

// DelNetdev closes a backend no device uses (QMP netdev_del).
func (m *Manager) DelNetdev(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	be, ok := m.netdevs[id]
	if !ok {
		return fmt.Errorf("%w: Device '%s' not found", ErrDeviceNotFound, id)
	}
	if be.Attached() {
		return fmt.Errorf("netdev '%s' is in use by a device; device_del it first", id)
	}
	delete(m.netdevs, id)
	return be.Close()
}

// Netdev returns backend id, or nil.
func (m *Manager) Netdev(id string) netdev.Backend {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.netdevs[id]
}

// NetdevIDs lists the backends' ids in order.
func (m *Manager) NetdevIDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.netdevs))
	for id := range m.netdevs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// closeNetdevsLocked closes every backend (Close, after the devices).
func (m *Manager) closeNetdevsLocked() []error {
	var errs []error
	for id, be := range m.netdevs {
		if err := be.Close(); err != nil {
			errs = append(errs, fmt.Errorf("netdev %s: %w", id, err))
		}
		delete(m.netdevs, id)
	}
	return errs
}

// buildVirtioNet attaches a virtio-net device to netdev=ID. Without mac=
// the device gets QEMU's default, 52:54:00:12:34:56 counting up per NIC.
func buildVirtioNet(m *Manager, spec qemuopt.DeviceSpec, p Plumbing) (pci.Device, string, error) {
	be, ok := m.netdevs[spec.Netdev]
	if !ok {
		return nil, "", fmt.Errorf("Property 'virtio-net-pci.netdev' can't find value '%s'", spec.Netdev)
	}
	if be.Attached() {
		return nil, "", fmt.Errorf("Property 'virtio-net-pci.netdev' can't use value '%s', it's in use", spec.Netdev)
	}
	var mac [6]byte
	if spec.MAC != "" {
		var err error
		if mac, err = vnet.ParseMAC(spec.MAC); err != nil {
			return nil, "", fmt.Errorf("Property 'virtio-net-pci.mac' doesn't take value '%s': %w", spec.MAC, err)
		}
	} else {
		// The counter never goes down, so a NIC plugged after an unplug
		// gets a new address, not the old NIC's; it counts from 0 again
		// only with a new Manager.
		mac = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56 + byte(m.nics)}
		m.nics++
	}
	dev, _, err := vnet.NewPCI(be, vnet.Options{MAC: mac}, virtio.Options{Mem: p.Mem, MSI: p.Signaler, Router: p.Router, IRQ: p.IRQ})
	if err != nil {
		return nil, "", err
	}
	m.p.Logf("virtio-net %q on netdev %s, MAC %s, in slot %d", spec.ID, spec.Netdev, vnet.FormatMAC(mac), p.Slot)
	return dev, "", nil
}
