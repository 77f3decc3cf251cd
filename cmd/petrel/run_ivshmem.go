package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/petrel-vmm/petrel/devices/ivshmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/machine/pc"
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

	backends map[string]backendSpec
	sockets  map[string]string // chardev id -> socket path
	devs     []deviceSpec
	regions  map[string]*hostmem.Region
}

type backendSpec struct {
	id, kind, path string
	size           uint64
}

type deviceSpec struct {
	driver, id, memdev, chardev string
	vectors, slot               int
}

func (o *pciDeviceOptions) register(fs *flag.FlagSet) {
	fs.Var(&o.objects, "object", "memory-backend-file,id=ID,share=on,mem-path=PATH,size=SIZE or memory-backend-shm,id=ID,size=SIZE (repeatable)")
	fs.Var(&o.chardevs, "chardev", "socket,id=ID,path=PATH (repeatable)")
	fs.Var(&o.devices, "device", "ivshmem-plain,memdev=ID[,addr=SLOT][,id=] or ivshmem-doorbell,chardev=ID[,vectors=N][,addr=SLOT][,id=] (repeatable)")
}

// keyValues splits "driver,k=v,..." into the driver and its options,
// refusing repeated keys. A bare key is a boolean set to on, as QEMU reads
// "share" in "memory-backend-file,share,...".
func keyValues(opt, s string) (string, map[string]string, error) {
	parts := splitOpts(s)
	kv := map[string]string{}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			v = "on"
		}
		if k == "" {
			return "", nil, fmt.Errorf("-%s %q: empty option name", opt, s)
		}
		if _, dup := kv[k]; dup {
			return "", nil, fmt.Errorf("-%s %q: %s given twice", opt, s, k)
		}
		kv[k] = v
	}
	return parts[0], kv, nil
}

// takeKeys returns an error naming any key of kv not in allowed.
func takeKeys(opt, s string, kv map[string]string, allowed ...string) error {
	for k := range kv {
		found := false
		for _, a := range allowed {
			found = found || a == k
		}
		if !found {
			return fmt.Errorf("-%s %q: unknown option %q", opt, s, k)
		}
	}
	return nil
}

func (o *pciDeviceOptions) parse() error {
	o.backends, o.sockets = map[string]backendSpec{}, map[string]string{}
	for _, s := range o.objects {
		kind, kv, err := keyValues("object", s)
		if err != nil {
			return err
		}
		b := backendSpec{id: kv["id"], kind: kind}
		if b.id == "" {
			return fmt.Errorf("-object %q: id= is required", s)
		}
		if _, dup := o.backends[b.id]; dup {
			return fmt.Errorf("-object %q: duplicate id %q", s, b.id)
		}
		if b.size, err = hostmem.ParseSize(kv["size"]); err != nil {
			return fmt.Errorf("-object %q: size: %w", s, err)
		}
		if err := hostmem.CheckSize(b.size); err != nil {
			return fmt.Errorf("-object %q: %w", s, err)
		}
		if v, ok := kv["share"]; ok {
			on, err := parseOnOff(v)
			if err != nil {
				return fmt.Errorf("-object %q: share: %w", s, err)
			}
			if !on {
				return fmt.Errorf("-object %q: share=off: ivshmem needs share=on memory", s)
			}
		}
		switch kind {
		case "memory-backend-file":
			if _, ok := kv["share"]; !ok {
				return fmt.Errorf("-object %q: memory-backend-file needs share=on for ivshmem", s)
			}
			if b.path = kv["mem-path"]; b.path == "" {
				return fmt.Errorf("-object %q: mem-path= is required", s)
			}
			err = takeKeys("object", s, kv, "id", "size", "share", "mem-path")
		case "memory-backend-shm":
			err = takeKeys("object", s, kv, "id", "size", "share")
		default:
			return fmt.Errorf("-object %q: unsupported object type %q (want memory-backend-file or memory-backend-shm)", s, kind)
		}
		if err != nil {
			return err
		}
		o.backends[b.id] = b
	}
	for _, s := range o.chardevs {
		kind, kv, err := keyValues("chardev", s)
		if err != nil {
			return err
		}
		if kind != "socket" {
			return fmt.Errorf("-chardev %q: only socket chardevs are supported", s)
		}
		if err := takeKeys("chardev", s, kv, "id", "path"); err != nil {
			return err
		}
		id, path := kv["id"], kv["path"]
		if id == "" || path == "" {
			return fmt.Errorf("-chardev %q: id= and path= are required", s)
		}
		if _, dup := o.sockets[id]; dup {
			return fmt.Errorf("-chardev %q: duplicate id %q", s, id)
		}
		o.sockets[id] = path
	}
	for _, s := range o.devices {
		d, err := o.parseDevice(s)
		if err != nil {
			return err
		}
		o.devs = append(o.devs, d)
	}
	return nil
}

func (o *pciDeviceOptions) parseDevice(s string) (deviceSpec, error) {
	driver, kv, err := keyValues("device", s)
	if err != nil {
		return deviceSpec{}, err
	}
	d := deviceSpec{driver: driver, id: kv["id"], memdev: kv["memdev"], chardev: kv["chardev"]}
	if a, ok := kv["addr"]; ok {
		if d.slot, err = parseSlot(a); err != nil {
			return d, fmt.Errorf("-device %q: %w", s, err)
		}
	}
	switch driver {
	case "ivshmem-plain":
		if _, ok := o.backends[d.memdev]; !ok {
			return d, fmt.Errorf("-device %q: memdev=%q names no -object memory backend", s, d.memdev)
		}
		err = takeKeys("device", s, kv, "id", "memdev", "addr", "master")
	case "ivshmem-doorbell":
		if _, ok := o.sockets[d.chardev]; !ok {
			return d, fmt.Errorf("-device %q: chardev=%q names no -chardev socket", s, d.chardev)
		}
		d.vectors = 1
		if v, ok := kv["vectors"]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > ivshmem.MaxVectors {
				return d, fmt.Errorf("-device %q: vectors=%q: want 1..%d", s, v, ivshmem.MaxVectors)
			}
			d.vectors = n
		}
		err = takeKeys("device", s, kv, "id", "chardev", "vectors", "addr", "master", "ioeventfd", "msi")
	default:
		return d, fmt.Errorf("-device %q: unsupported driver %q (petrel run builds ivshmem-plain and ivshmem-doorbell; disks use -disk/-drive)", s, driver)
	}
	return d, err
}

// parseSlot parses QEMU's addr=SLOT[.FN] (hex, as QEMU reads it); only
// function 0 exists here.
func parseSlot(a string) (int, error) {
	slot, fn, hasFn := strings.Cut(a, ".")
	if hasFn && strings.TrimLeft(fn, "0") != "" {
		return 0, fmt.Errorf("addr=%q: only function 0 is supported", a)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(slot), "0x"), 16, 8)
	if err != nil || n < 1 || n >= pci.NumSlots {
		return 0, fmt.Errorf("addr=%q: want a slot 1..0x1f", a)
	}
	return int(n), nil
}

// region opens backend id on first use.
func (o *pciDeviceOptions) region(id string) (*hostmem.Region, error) {
	if r, ok := o.regions[id]; ok {
		return r, nil
	}
	b := o.backends[id]
	var r *hostmem.Region
	var err error
	if b.kind == "memory-backend-shm" {
		r, err = hostmem.NewAnonymousRegion(id, b.size)
	} else {
		r, err = hostmem.OpenRegion(id, b.path, b.size)
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
		switch d.driver {
		case "ivshmem-plain":
			r, err := o.region(d.memdev)
			if err != nil {
				return err
			}
			build = func(p pc.PCIPlumbing) (pci.Device, error) {
				return ivshmem.NewPlain(r, ivshmem.Interrupts{Router: p.Router, Signaler: p.Signaler, IRQ: p.IRQ})
			}
		case "ivshmem-doorbell":
			path, vectors := o.sockets[d.chardev], d.vectors
			build = func(p pc.PCIPlumbing) (pci.Device, error) {
				return ivshmem.NewDoorbell(path, vectors, ivshmem.Interrupts{Router: p.Router, Signaler: p.Signaler, IRQ: p.IRQ})
			}
		}
		if _, err := m.AddPCIDevice(d.id, d.slot, build); err != nil {
			return fmt.Errorf("-device %s: %w", d.driver, err)
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
