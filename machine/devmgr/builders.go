package devmgr

import (
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/devices/ivshmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/blk"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// builder makes one driver's device for the slot in p. It runs with
// Manager.mu held. It returns the block node it borrowed ("" if none),
// also on error, so that the caller gives it back.
type builder func(m *Manager, spec qemuopt.DeviceSpec, p Plumbing) (pci.Device, string, error)

// builders are the drivers AddDevice knows (qemuopt.Drivers).
var builders = map[string]builder{
	"virtio-blk-pci":   buildVirtioBlk,
	"ivshmem-plain":    buildIvshmemPlain,
	"ivshmem-doorbell": buildIvshmemDoorbell,
	"virtio-net-pci":   buildVirtioNet,
}

// buildVirtioBlk serves drive=NODE (a -blockdev/-drive/blockdev-add node)
// or file=PATH (a node opened for this device alone, named "#ID" or
// "#slotN", closed when the device goes).
func buildVirtioBlk(m *Manager, spec qemuopt.DeviceSpec, p Plumbing) (pci.Device, string, error) {
	node := spec.Drive
	switch {
	case spec.File != "":
		node = "#" + spec.ID
		if spec.ID == "" {
			node = fmt.Sprintf("#slot%d", p.Slot)
		}
		if err := m.p.Blocks.Open(qemuopt.BlockdevSpec{NodeName: node, Format: spec.Format, Filename: spec.File,
			ReadOnly: spec.ReadOnly}, true); err != nil {
			return nil, "", err
		}
	case node == "":
		return nil, "", fmt.Errorf("Property 'drive' is required")
	}
	img, err := m.p.Blocks.Borrow(node, spec.ID)
	if err != nil {
		if spec.File != "" {
			m.p.Blocks.Return(node) // closes the node opened above
		}
		if spec.Drive != "" {
			return nil, "", fmt.Errorf("Property 'virtio-blk-device.drive' can't use '%s': %w", node, err)
		}
		return nil, "", err
	}
	dev, _, err := blk.NewPCI(img, blk.Options{Serial: spec.Serial, NumQueues: spec.NumQueues, ReadOnly: img.ReadOnly()},
		virtio.Options{Mem: p.Mem, MSI: p.Signaler, Router: p.Router, IRQ: p.IRQ})
	if err != nil {
		return nil, node, fmt.Errorf("virtio-blk for node %s: %w", node, err)
	}
	m.p.Logf("virtio-blk %q on node %s (%s, %d MiB) in slot %d", spec.ID, node, img.Format(), img.Size()>>20, p.Slot)
	return dev, node, nil
}

// interrupts hands an ivshmem device the slot's interrupt plumbing: irqfds
// and ioeventfds for the doorbell's vectors, MSI injection, INTA#.
func interrupts(p Plumbing) ivshmem.Interrupts {
	return ivshmem.Interrupts{Router: p.Router, Signaler: p.Signaler, IRQ: p.IRQ}
}

// buildIvshmemPlain serves memdev=ID (an -object backend, shared by the
// device and kept across resets) or shm=NAME|PATH,size=SIZE (a shm_open
// name without '/', or a file path; created if missing).
func buildIvshmemPlain(m *Manager, spec qemuopt.DeviceSpec, p Plumbing) (pci.Device, string, error) {
	if spec.Memdev != "" {
		r, err := m.regionLocked(spec.Memdev)
		if err != nil {
			return nil, "", err
		}
		d, err := ivshmem.NewPlain(r, interrupts(p))
		return d, "", err
	}
	if spec.Shm == "" || spec.Size == 0 {
		return nil, "", fmt.Errorf("memdev= (an -object memory backend), or shm= (a POSIX shm name or a file path) and size=, is required")
	}
	path := spec.Shm
	if !strings.Contains(path, "/") {
		var err error
		if path, err = hostmem.ShmPath(spec.Shm); err != nil {
			return nil, "", err
		}
	}
	d, err := ivshmem.NewPlainFile(spec.ID, path, spec.Size, interrupts(p))
	return d, "", err
}

// buildIvshmemDoorbell serves chardev=ID (a -chardev socket) or
// socket=PATH: a client of the ivshmem server there.
func buildIvshmemDoorbell(m *Manager, spec qemuopt.DeviceSpec, p Plumbing) (pci.Device, string, error) {
	sock := spec.Socket
	if spec.Chardev != "" {
		c, ok := m.chardevs[spec.Chardev]
		if !ok {
			return nil, "", fmt.Errorf("chardev=%q names no -chardev socket", spec.Chardev)
		}
		sock = c.Path
	}
	if sock == "" {
		return nil, "", fmt.Errorf("chardev= or socket= (the ivshmem server's socket path) is required")
	}
	// A DeviceSpec built in code (not through qemuopt, which defaults it)
	// may leave Vectors 0; QEMU's default is 1.
	vectors := spec.Vectors
	if vectors == 0 {
		vectors = 1
	}
	d, err := ivshmem.NewDoorbell(sock, vectors, interrupts(p))
	return d, "", err
}

// regionLocked opens memory backend id on first use; later devices share
// the mapping. Called with m.mu held.
func (m *Manager) regionLocked(id string) (*hostmem.Region, error) {
	if r, ok := m.regions[id]; ok {
		return r, nil
	}
	o, ok := m.objects[id]
	if !ok {
		return nil, fmt.Errorf("memdev=%q names no -object memory backend", id)
	}
	var r *hostmem.Region
	var err error
	if o.Type == "memory-backend-shm" {
		r, err = hostmem.NewAnonymousRegion(id, o.Size)
	} else {
		r, err = hostmem.OpenRegion(id, o.MemPath, o.Size)
	}
	if err != nil {
		return nil, fmt.Errorf("memory backend %q: %w", id, err)
	}
	m.regions[id] = r
	return r, nil
}
