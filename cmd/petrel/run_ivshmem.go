package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/petrel-vmm/petrel/devices/ivshmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// pciDeviceOptions are `petrel run`'s QEMU-style -object, -chardev and
// -device options for the devices it can build from them (ivshmem-plain
// and ivshmem-doorbell):
//
//	-object memory-backend-file,id=ID,share=on,mem-path=PATH,size=SIZE
//	-object memory-backend-shm,id=ID,size=SIZE
//	-chardev socket,id=ID,path=PATH
//	-device ivshmem-plain,memdev=ID[,addr=SLOT][,id=NAME]
//	-device ivshmem-doorbell,chardev=ID[,vectors=N][,addr=SLOT][,id=NAME]
//
// Memory backends are opened once and shared by the machines of successive
// boots (a guest reset rebuilds the machine); devices are rebuilt per boot.
type pciDeviceOptions struct {
	objects, chardevs, devices listFlag

	backends map[string]qemuopt.ObjectSpec
	sockets  map[string]string // chardev id -> socket path
	devs     []qemuopt.DeviceSpec
	regions  map[string]*hostmem.Region
}

func (o *pciDeviceOptions) register(fs *flag.FlagSet) {
	fs.Var(&o.objects, "object", "memory-backend-file,id=ID,share=on,mem-path=PATH,size=SIZE or memory-backend-shm,id=ID,size=SIZE (repeatable)")
	fs.Var(&o.chardevs, "chardev", "socket,id=ID,path=PATH (repeatable)")
	fs.Var(&o.devices, "device", "ivshmem-plain,memdev=ID[,addr=SLOT][,id=] or ivshmem-doorbell,chardev=ID[,vectors=N][,addr=SLOT][,id=] (repeatable)")
}

func (o *pciDeviceOptions) parse() error {
	o.backends, o.sockets = map[string]qemuopt.ObjectSpec{}, map[string]string{}
	for _, s := range o.objects {
		b, err := qemuopt.ParseObject(s)
		if err != nil {
			return err
		}
		if err := hostmem.CheckSize(b.Size); err != nil {
			return fmt.Errorf("-object %q: %w", s, err)
		}
		if _, dup := o.backends[b.ID]; dup {
			return fmt.Errorf("-object %q: duplicate id %q", s, b.ID)
		}
		o.backends[b.ID] = b
	}
	for _, s := range o.chardevs {
		c, err := qemuopt.ParseChardev(s)
		if err != nil {
			return err
		}
		if _, dup := o.sockets[c.ID]; dup {
			return fmt.Errorf("-chardev %q: duplicate id %q", s, c.ID)
		}
		o.sockets[c.ID] = c.Path
	}
	for _, s := range o.devices {
		d, err := qemuopt.ParseDevice(s)
		if err != nil {
			return err
		}
		switch d.Driver {
		case "ivshmem-plain":
			if _, ok := o.backends[d.Memdev]; !ok {
				return fmt.Errorf("-device %q: memdev=%q names no -object memory backend", s, d.Memdev)
			}
		case "ivshmem-doorbell":
			if _, ok := o.sockets[d.Chardev]; !ok {
				return fmt.Errorf("-device %q: chardev=%q names no -chardev socket", s, d.Chardev)
			}
		default:
			return fmt.Errorf("-device %q: unsupported driver %q (petrel run builds ivshmem-plain and ivshmem-doorbell; disks use -disk/-drive)", s, d.Driver)
		}
		o.devs = append(o.devs, d)
	}
	return nil
}

// region opens backend id on first use.
func (o *pciDeviceOptions) region(id string) (*hostmem.Region, error) {
	if r, ok := o.regions[id]; ok {
		return r, nil
	}
	b := o.backends[id]
	var r *hostmem.Region
	var err error
	if b.Type == "memory-backend-shm" {
		r, err = hostmem.NewAnonymousRegion(id, b.Size)
	} else {
		r, err = hostmem.OpenRegion(id, b.MemPath, b.Size)
	}
	if err != nil {
		return nil, fmt.Errorf("memory backend %q: %w", id, err)
	}
	if o.regions == nil {
		o.regions = map[string]*hostmem.Region{}
	}
	o.regions[id] = r
	return r, nil
}

// attach plugs every -device into m.
func (o *pciDeviceOptions) attach(m *pc.Machine) error {
	for _, d := range o.devs {
		var build func(p pc.PCIPlumbing) (pci.Device, error)
		switch d.Driver {
		case "ivshmem-plain":
			r, err := o.region(d.Memdev)
			if err != nil {
				return err
			}
			build = func(p pc.PCIPlumbing) (pci.Device, error) {
				return ivshmem.NewPlain(r, ivshmem.Interrupts{Router: p.Router, Signaler: p.Signaler, IRQ: p.IRQ})
			}
		case "ivshmem-doorbell":
			path, vectors := o.sockets[d.Chardev], d.Vectors
			build = func(p pc.PCIPlumbing) (pci.Device, error) {
				return ivshmem.NewDoorbell(path, vectors, ivshmem.Interrupts{Router: p.Router, Signaler: p.Signaler, IRQ: p.IRQ})
			}
		}
		if _, err := m.AddPCIDevice(d.ID, max(d.Slot, 0), build); err != nil {
			return fmt.Errorf("-device %s: %w", d.Driver, err)
		}
	}
	return nil
}

// close unmaps the memory backends (after the last machine closed).
func (o *pciDeviceOptions) close() error {
	var errs []error
	for id, r := range o.regions {
		if err := r.Close(); err != nil {
			errs = append(errs, fmt.Errorf("memory backend %q: %w", id, err))
		}
	}
	o.regions = nil
	return errors.Join(errs...)
}
