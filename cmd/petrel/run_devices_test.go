//go:build amd64

package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseIvshmemDevices(t *testing.T) {
	o, err := parseRunArgs([]string{"-kernel", "k",
		"-object", "memory-backend-file,id=m1,share,mem-path=/dev/shm/x,size=1M",
		"-object", "memory-backend-shm,id=m2,size=64K",
		"-chardev", "socket,id=ivs,path=/tmp/ivshmem_socket",
		"-device", "ivshmem-plain,memdev=m1,addr=0x5,id=iv0",
		"-device", "ivshmem-plain,memdev=m2",
		"-device", "ivshmem-doorbell,chardev=ivs,vectors=4,addr=06.0",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := o.cfg.Devices
	if len(d) != 3 || d[0].Slot != 5 || d[0].ID != "iv0" || d[1].Slot != -1 || d[2].Vectors != 4 || d[2].Slot != 6 {
		t.Fatalf("devices %+v", d)
	}
	if b := o.cfg.Objects[0]; b.ID != "m1" || b.Size != 1<<20 || b.MemPath != "/dev/shm/x" {
		t.Fatalf("backend %+v", b)
	}
	if c := o.cfg.Chardevs[0]; c.ID != "ivs" || c.Path != "/tmp/ivshmem_socket" {
		t.Fatalf("chardev %+v", c)
	}
}

// QEMU's own spellings for disks: -drive if=none or -blockdev, then
// -device virtio-blk-pci,drive=.
func TestParseQEMUDiskOptions(t *testing.T) {
	o, err := parseRunArgs([]string{"-kernel", "k",
		"-drive", "file=a.qcow2,if=none,id=d0,format=qcow2",
		"-blockdev", "driver=raw,node-name=n1,file.driver=file,file.filename=b.img",
		"-blockdev", `{"driver":"qcow2","node-name":"n2","file":{"driver":"file","filename":"c.qcow2"}}`,
		"-device", "virtio-blk-pci,drive=d0,id=vd0,addr=0x4",
		"-device", "virtio-blk-pci,drive=n1,serial=S",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if len(c.Disks) != 1 || !c.Disks[0].NoDevice || len(c.Blockdevs) != 2 || c.Blockdevs[1].Filename != "c.qcow2" ||
		len(c.Devices) != 2 || c.Devices[0].Drive != "d0" || c.Devices[0].Slot != 4 || c.Devices[1].Serial != "S" {
		t.Fatalf("config %+v", c)
	}
	for _, bad := range [][]string{
		{"-device", "virtio-blk-pci,drive=nope"},
		{"-disk", "a.img,id=d0", "-device", "virtio-blk-pci,drive=d0"},
		{"-drive", "file=a,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0", "-device", "virtio-blk-pci,drive=d0"},
		{"-drive", "file=a,if=none,id=d0", "-blockdev", "driver=raw,node-name=d0,file.driver=file,file.filename=b"},
	} {
		if _, err := parseRunArgs(append([]string{"-kernel", "k"}, bad...), io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseIvshmemDeviceErrors(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"-object memory-backend-file,id=m,share=on,mem-path=/x,size=3M", "power of two"},
		{"-object memory-backend-file,id=m,mem-path=/x,size=1M", "share=on"},
		{"-object memory-backend-file,id=m,share=off,mem-path=/x,size=1M", "share=on"},
		{"-object memory-backend-file,id=m,share=on,size=1M", "mem-path"},
		{"-object memory-backend-ram,id=m,size=1M", "unsupported object"},
		{"-object memory-backend-shm,size=1M", "id= is required"},
		{"-object memory-backend-shm,id=m,size=1M,bogus=1", "unknown option"},
		{"-object memory-backend-shm,id=m,size=1M,share=maybe", "on or off"},
		{"-object memory-backend-shm,id=m,size=1M -object memory-backend-shm,id=m,size=1M", "duplicate"},
		{"-chardev pipe,id=c,path=/x", "only socket"},
		{"-chardev socket,id=c", "required"},
		{"-device ivshmem-plain,memdev=nope", "names no -object"},
		{"-device ivshmem-doorbell,chardev=nope", "names no -chardev"},
		{"-chardev socket,id=c,path=/s -device ivshmem-doorbell,chardev=c,vectors=0", "vectors"},
		{"-chardev socket,id=c,path=/s -device ivshmem-doorbell,chardev=c,vectors=65", "vectors"},
		{"-chardev socket,id=c,path=/s -device ivshmem-doorbell,chardev=c,addr=0x20", "slot must be"},
		{"-chardev socket,id=c,path=/s -device ivshmem-doorbell,chardev=c,addr=3.1", "function 0"},
		{"-chardev socket,id=c,path=/s -device ivshmem-doorbell,chardev=c,size=1M", "not found"},
		{"-device e1000", "not a valid device model"},
		{"-device virtio-blk-pci,drive=d", "names no -blockdev"},
		{"-device ivshmem-plain,memdev", "names no -object"},
		{"-device ivshmem-plain,=x", "empty option"},
	} {
		args := append([]string{"-kernel", "k"}, strings.Fields(c.args)...)
		_, err := parseRunArgs(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

func TestParseNetworkOptions(t *testing.T) {
	o, err := parseRunArgs([]string{"-kernel", "k",
		"-netdev", "user,id=n0,hostfwd=tcp::5555-:22",
		"-netdev", "tap,id=t0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:60,addr=0x6,id=nic0",
		"-device", "virtio-net-pci,netdev=t0",
		"-nic", "user,model=virtio",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if n := o.cfg.Netdevs; len(n) != 3 || n[0].ID != "n0" || n[1].Ifname != "tap0" || n[2].ID != "__nic0" {
		t.Fatalf("netdevs %+v", n)
	}
	if d := o.cfg.Devices; len(d) != 3 || d[0].Netdev != "__nic0" || d[1].Slot != 6 || d[1].MAC != "52:54:00:12:34:60" || d[2].Netdev != "t0" {
		t.Fatalf("devices %+v", d)
	}
	for _, bad := range [][]string{
		{"-device", "virtio-net-pci,netdev=nope"},
		{"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-net-pci,netdev=n0"},
		{"-netdev", "user,id=n0", "-netdev", "user,id=n0"},
		{"-nic", "user,model=e1000"},
	} {
		if _, err := parseRunArgs(append([]string{"-kernel", "k"}, bad...), io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
