//go:build amd64

package main

import (
	"flag"
	"fmt"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// deviceOptions are `petrel run`'s QEMU-style -blockdev, -object,
// -chardev and -device options, read by qemuopt into pc.Config:
//
//	-blockdev driver=qcow2,node-name=N,file.driver=file,file.filename=P (or its JSON form)
//	-object memory-backend-file,id=ID,share=on,mem-path=PATH,size=SIZE
//	-object memory-backend-shm,id=ID,size=SIZE
//	-chardev socket,id=ID,path=PATH
//	-device virtio-blk-pci,drive=NODE[,addr=SLOT][,serial=S][,id=NAME]
//	-device ivshmem-plain,memdev=ID[,addr=SLOT][,id=NAME]
//	-device ivshmem-doorbell,chardev=ID[,vectors=N][,addr=SLOT][,id=NAME]
//	-netdev tap,id=N,ifname=TAP[,script=no,downscript=no][,vhost=off]
//	-netdev user,id=N[,net=10.0.2.0/24][,hostfwd=tcp::HOSTPORT-:GUESTPORT]...
//	-device virtio-net-pci,netdev=N[,mac=MAC][,addr=SLOT][,id=NAME]
//	-nic user|tap,...[,model=virtio-net-pci][,mac=MAC] (a -netdev and its device)
//
// The references between them (drive=, memdev=, chardev=) are checked here
// so that a typo fails before anything is opened.
type deviceOptions struct {
	// Each field holds one option's occurrences as given, parsed only by
	// parse (so that all errors come after flag parsing, in one place).
	blockdevs, objects, chardevs, devices, netdevs, nics listFlag
}

// register declares the options on fs.
func (o *deviceOptions) register(fs *flag.FlagSet) {
	fs.Var(&o.blockdevs, "blockdev", "driver=qcow2|qed|raw,node-name=N,file.driver=file,file.filename=PATH[,read-only=on][,cache.direct=on] or its JSON form (repeatable)")
	fs.Var(&o.objects, "object", "memory-backend-file,id=ID,share=on,mem-path=PATH,size=SIZE or memory-backend-shm,id=ID,size=SIZE (repeatable)")
	fs.Var(&o.chardevs, "chardev", "socket,id=ID,path=PATH (repeatable)")
	fs.Var(&o.devices, "device", "virtio-blk-pci,drive=NODE, virtio-net-pci,netdev=N[,mac=MAC], ivshmem-plain,memdev=ID or ivshmem-doorbell,chardev=ID[,vectors=N]; each [,addr=SLOT][,id=NAME] (repeatable)")
	fs.Var(&o.netdevs, "netdev", "tap,id=N,ifname=TAP[,script=no,downscript=no][,vhost=off] or user,id=N[,net=CIDR][,hostfwd=tcp:[HADDR]:HPORT-[GADDR]:GPORT]... (repeatable)")
	fs.Var(&o.nics, "nic", "user|tap,NETDEV-OPTIONS[,model=virtio-net-pci][,mac=MAC]: a -netdev with its virtio-net-pci (repeatable)")
}

// parse fills cfg's Blockdevs, Objects, Chardevs and Devices. cfg.Disks
// must already hold the -disk/-drive disks (their ids are nodes too).
func (o *deviceOptions) parse(cfg *pc.Config) error {
	// nodes maps every block node name to whether a device already uses
	// it: a -disk or -drive with its own device (not if=none) uses its
	// node; -blockdev nodes start unused; each -device drive= takes one,
	// so two devices cannot share a node (QEMU also refuses that, short
	// of share-rw). netdevs below works the same way for NICs. objects
	// and chardevs only record which ids exist.
	nodes, objects, chardevs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i, d := range cfg.Disks {
		name := d.ID
		if name == "" {
			name = fmt.Sprintf("disk%d", i)
		}
		nodes[name] = !d.NoDevice // true: its own device already uses it
	}
	for _, s := range o.blockdevs {
		b, err := qemuopt.ParseBlockdev(s)
		if err != nil {
			return err
		}
		if _, dup := nodes[b.NodeName]; dup {
			return fmt.Errorf("-blockdev %q: duplicate node name %q", s, b.NodeName)
		}
		nodes[b.NodeName] = false
		cfg.Blockdevs = append(cfg.Blockdevs, b)
	}
	for _, s := range o.objects {
		b, err := qemuopt.ParseObject(s)
		if err != nil {
			return err
		}
		// Checked here, not only when the device opens it, so that a bad
		// size fails before the machine is built.
		if err := hostmem.CheckSize(b.Size); err != nil {
			return fmt.Errorf("-object %q: %w", s, err)
		}
		if objects[b.ID] {
			return fmt.Errorf("-object %q: duplicate id %q", s, b.ID)
		}
		objects[b.ID] = true
		cfg.Objects = append(cfg.Objects, b)
	}
	for _, s := range o.chardevs {
		c, err := qemuopt.ParseChardev(s)
		if err != nil {
			return err
		}
		if chardevs[c.ID] {
			return fmt.Errorf("-chardev %q: duplicate id %q", s, c.ID)
		}
		chardevs[c.ID] = true
		cfg.Chardevs = append(cfg.Chardevs, c)
	}
	netdevs := map[string]bool{} // id -> in use by a device
	for _, s := range o.netdevs {
		n, err := qemuopt.ParseNetdev(s)
		if err != nil {
			return err
		}
		if _, dup := netdevs[n.ID]; dup {
			return fmt.Errorf("-netdev %q: duplicate id %q", s, n.ID)
		}
		netdevs[n.ID] = false
		cfg.Netdevs = append(cfg.Netdevs, n)
	}
	for i, s := range o.nics {
		n, d, err := qemuopt.ParseNIC(s, i)
		if err != nil {
			return err
		}
		netdevs[n.ID] = true
		cfg.Netdevs = append(cfg.Netdevs, n)
		cfg.Devices = append(cfg.Devices, d)
	}
	for _, s := range o.devices {
		d, err := qemuopt.ParseDevice(s)
		if err != nil {
			return err
		}
		switch {
		case d.Driver == "virtio-net-pci":
			used, ok := netdevs[d.Netdev]
			if !ok {
				return fmt.Errorf("-device %q: netdev=%q names no -netdev", s, d.Netdev)
			}
			if used {
				return fmt.Errorf("-device %q: netdev %q is already in use by another device", s, d.Netdev)
			}
			netdevs[d.Netdev] = true
		case d.Driver == "virtio-blk-pci" && d.Drive != "":
			used, ok := nodes[d.Drive]
			if !ok {
				return fmt.Errorf("-device %q: drive=%q names no -blockdev node or -drive id", s, d.Drive)
			}
			if used {
				return fmt.Errorf("-device %q: drive %q is already in use by another device", s, d.Drive)
			}
			nodes[d.Drive] = true
		case d.Driver == "ivshmem-plain" && d.Memdev != "" && !objects[d.Memdev]:
			return fmt.Errorf("-device %q: memdev=%q names no -object memory backend", s, d.Memdev)
		case d.Driver == "ivshmem-doorbell" && d.Chardev != "" && !chardevs[d.Chardev]:
			return fmt.Errorf("-device %q: chardev=%q names no -chardev socket", s, d.Chardev)
		}
		cfg.Devices = append(cfg.Devices, d)
	}
	return nil
}
