package pc

import (
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/devices/ivshmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/qemuopt"
)

func init() {
	deviceMakers["ivshmem-plain"] = addIvshmemPlainQMP
	deviceMakers["ivshmem-doorbell"] = addIvshmemDoorbellQMP
}

func (m *Machine) ivshmemInterrupts(slot int) ivshmem.Interrupts {
	return ivshmem.Interrupts{Router: m.vm, Signaler: m.vm, IRQ: m.vm.IRQLine(pci.INTxGSI(slot))}
}

func (m *Machine) plugIvshmem(d *ivshmem.Device, slot int) error {
	if err := m.pci.Add(slot, d); err != nil {
		d.Release()
		return err
	}
	return nil
}

// addIvshmemPlainQMP is device_add ivshmem-plain,shm=NAME|PATH,size=SIZE:
// a shm_open name (no '/') or a file path, created if missing. memdev=
// needs -object backends, which live in `petrel run`, not here.
func addIvshmemPlainQMP(m *Machine, req qemuopt.DeviceSpec, slot int) error {
	if md := req.Memdev; md != "" {
		return fmt.Errorf("memdev=%q: memory backends are not available to device_add; use shm= and size=", md)
	}
	shm := req.Shm
	if shm == "" || req.Size == 0 {
		return fmt.Errorf("shm= (a POSIX shm name or a file path) and size= are required")
	}
	path := shm
	if !strings.Contains(shm, "/") {
		var err error
		if path, err = hostmem.ShmPath(shm); err != nil {
			return err
		}
	}
	d, err := ivshmem.NewPlainFile(req.ID, path, req.Size, m.ivshmemInterrupts(slot))
	if err != nil {
		return err
	}
	return m.plugIvshmem(d, slot)
}

// addIvshmemDoorbellQMP is device_add ivshmem-doorbell,socket=PATH[,vectors=N]
// (chardev= needs -chardev, which lives in `petrel run`).
func addIvshmemDoorbellQMP(m *Machine, req qemuopt.DeviceSpec, slot int) error {
	if cd := req.Chardev; cd != "" {
		return fmt.Errorf("chardev=%q: chardevs are not available to device_add; use socket=PATH", cd)
	}
	sock := req.Socket
	if sock == "" {
		return fmt.Errorf("socket= (the ivshmem server's socket path) is required")
	}
	d, err := ivshmem.NewDoorbell(sock, req.Vectors, m.ivshmemInterrupts(slot))
	if err != nil {
		return err
	}
	return m.plugIvshmem(d, slot)
}
