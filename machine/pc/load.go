//go:build amd64

package pc

import (
	"errors"
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/firmware/bzimage"
	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// loader puts the guest's software into RAM and the boot vCPU at its
// entry: at power-on (New) and again after every in-place reset, which
// has dropped RAM (reset.go). It reads the kernel and initrd files each
// time, so a reset boots what the files hold then.
type loader struct {
	cfg  Config
	mem  *guestmem.Memory
	bus  *pci.Bus      // the DSDT describes its slots
	hp   *acpi.Hotplug // and the hotplug controller's
	boot *vmm.VCPU     // vCPU 0, the one that enters the kernel
	// overrides are the CPUID features the host forced (vcpuSet): a
	// Linux kernel gets noxsave when XSAVE shows but cannot run.
	overrides []string
	logf      func(string, ...any)

	// info is the last load's entry point and protocol; written only by
	// load, which runs while no vCPU does.
	info bootInfo
}

// load places the kernel, initrd and boot tables and sets up the boot vCPU.
func (l *loader) load() error {
	kernel, head := l.cfg.KernelBytes, false
	if kernel == nil {
		if l.cfg.Kernel == "" {
			return errors.New("no kernel given")
		}
		b, whole, err := readKernelHead(l.cfg.Kernel)
		if err != nil {
			return fmt.Errorf("reading kernel: %w", err)
		}
		kernel, head = b, !whole
	}
	initrd := l.cfg.InitrdBytes
	if initrd == nil && l.cfg.Initrd != "" {
		// An initrd larger than RAM cannot be placed anyway.
		b, err := readFileMax(l.cfg.Initrd, uint64(l.cfg.MemoryMiB)<<20)
		if err != nil {
			return fmt.Errorf("reading initrd: %w", err)
		}
		initrd = b
	}
	e820, err := e820Map(uint64(l.cfg.MemoryMiB) << 20)
	if err != nil {
		return err
	}
	low, _ := ramLayout(uint64(l.cfg.MemoryMiB) << 20)
	var rsdp uint64 // 0: no ACPI, the guest uses its legacy defaults
	if !l.cfg.NoACPI {
		if rsdp, err = writeACPI(l.mem, tablesConfig(l.cfg.CPUs, l.bus, l.hp), l.logf); err != nil {
			return err
		}
	}
	cmdline, added := withNoXsave(l.cfg.Cmdline, kernel, l.overrides)
	if added {
		l.logf("the host shows XSAVE to the guest although it cannot run it; added noxsave to the Linux command line")
	}
	in := bootInput{
		kernel: kernel, initrd: initrd, cmdline: cmdline, e820: e820, rsdp: rsdp,
		lowEnd: low, protocol: l.cfg.Boot, cacheDir: l.cfg.KernelCacheDir,
	}
	if l.cfg.KernelBytes == nil {
		// A kernel from a file may use the decompressed-kernel cache,
		// keyed by the file (firmware/bzimage).
		in.kernelPath, in.kernelHead = l.cfg.Kernel, head
		if in.cacheDir == "" {
			var note string
			if in.cacheDir, note, err = bzimage.DefaultCacheDir(); err != nil {
				return fmt.Errorf("decompressed-kernel cache: %w (-kernel-cache DIR names one)", err)
			}
			if note != "" {
				l.logf("%s", note)
			}
		}
	}
	t0 := time.Now()
	if l.info, err = loadKernel(l.mem, in); err != nil {
		return err
	}
	l.logf("kernel loaded by %s in %v", l.info.protocol, time.Since(t0).Round(time.Microsecond))
	if l.info.whyNotPVH != nil {
		l.logf("not by pvh: %v", l.info.whyNotPVH)
	}
	if err := writeBootTables(l.mem, l.info.protocol == BootLinux64); err != nil {
		return err
	}
	return setupBootCPU(l.boot, l.info)
}
