package pseries

import (
	"fmt"
	"io"
	"log"
)

// Config describes a pseries VM for Run.
type Config struct {
	RAMSize   uint64 // bytes, a multiple of 64 KiB, at least 64 MiB
	CPUs      int
	Kernel    []byte // vmlinux (ELF) or a flat image entered at 0
	Initrd    []byte
	Cmdline   string
	NVRAMPath string    // optional NVRAM backing file
	Console   io.Writer // vty output
	Input     io.Reader // vty input (optional)
	Log       *log.Logger
	// KVMType selects the KVM flavour for KVM_CREATE_VM: 0 default (HV if
	// the host offers it, else PR), 1 HV, 2 PR.
	KVMType int
}

// minRAM is the smallest RAM Run accepts; the boot layout (loader.go)
// puts the initrd at 40 MiB and RTAS and the device tree below the top of
// the real-mode area, which 64 MiB leaves room for.
const minRAM = 64 << 20

// check refuses a Config Run cannot boot before anything is allocated.
// RAM is a multiple of 64 KiB, the page size ppc64 host kernels are
// commonly built with, so the memory slot is whole host pages.
func (c *Config) check() error {
	if c.RAMSize < minRAM || c.RAMSize%(64<<10) != 0 {
		return fmt.Errorf("pseries: RAM size %d must be a multiple of 64 KiB and at least %d", c.RAMSize, minRAM)
	}
	if c.CPUs < 1 || c.CPUs > maxCPUs {
		return fmt.Errorf("pseries: %d CPUs, want 1..%d", c.CPUs, maxCPUs)
	}
	if len(c.Kernel) == 0 {
		return fmt.Errorf("pseries: no kernel")
	}
	if c.KVMType < 0 || c.KVMType > 2 {
		return fmt.Errorf("pseries: KVM type %d, want 0, 1 or 2", c.KVMType)
	}
	return nil
}
