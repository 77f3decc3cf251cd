//go:build amd64

// Package pc is Petrel's x86 PC machine: memory map and e820, the
// in-kernel irqchip and PIT, COM1, CMOS RTC, i8042, the ACPI PM block, the
// PCI host bridge, and the two boot paths (PVH for an ELF with the PVH
// note, the Linux 64-bit boot protocol for a bzImage).
//
//	m, err := pc.New(pc.Config{MemoryMiB: 256, Kernel: "guest.elf", Serial: &out})
//	defer m.Close()
//	reason, err := m.Run(ctx) // ExitPowerOff, ExitReset, ExitStopped, ...
//
// Run returns a non-nil error with the vCPU registers for a triple fault,
// an entry failure or a KVM internal error. Shutdown, Pause/Resume, the
// snapshot calls (SaveVM, LoadVM, ...) and the device manager work from
// any goroutine while Run runs. Other packages reach the parts through
// PCI(), Devices() (the device manager), Blocks() (the block-node
// registry), MMIO() and VCPUs() (counters). QMP is served by
// machine/pcqmp. Machine's type comment says which type does what.
//
// Layout (docs/ARCHITECTURE.md): RAM below 3 GiB and from 4 GiB; e820
// reserves 0x9fc00-0xfffff (ACPI tables at 0xe0000) and 0xfc000000-4 GiB
// (IOAPIC, LAPIC, KVM's TSS and identity-map pages). The 8259s are left
// masked and ISA IRQ 0 is routed to IOAPIC pin 2, as the MADT says.
package pc

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/machine/blocknodes"
	"github.com/petrel-vmm/petrel/machine/devmgr"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// Config describes a PC to build.
type Config struct {
	// MemoryMiB is the guest RAM size (default 256).
	MemoryMiB int
	// CPUs is the vCPU count (default 1).
	CPUs int
	// Kernel is the path of an ELF with a PVH note or a bzImage;
	// KernelBytes, when set, is used instead.
	Kernel      string
	KernelBytes []byte
	// Initrd (path) or InitrdBytes is loaded as the initial ramdisk.
	Initrd      string
	InitrdBytes []byte
	Cmdline     string
	// Boot selects the boot protocol (BootAuto by default).
	Boot BootProtocol
	// KernelCacheDir caches decompressed bzImages for PVH ("" = default).
	KernelCacheDir string
	// CPU is the -cpu string, "host[,+feat,-feat]" ("" = host).
	CPU string
	// Disks are -disk/-drive images: block nodes, each with a virtio-blk
	// device unless NoDevice (-drive if=none).
	Disks []DiskConfig
	// Blockdevs are -blockdev nodes; Objects and Chardevs the memory
	// backends and sockets devices name; Devices the -device devices,
	// plugged after the disks.
	Blockdevs []qemuopt.BlockdevSpec
	Objects   []qemuopt.ObjectSpec
	Chardevs  []qemuopt.ChardevSpec
	Devices   []qemuopt.DeviceSpec
	// Netdevs are the -netdev/-nic network backends, opened before the
	// devices that name them.
	Netdevs []qemuopt.NetdevSpec
	// Serial receives COM1 output (nil discards); SerialIn feeds COM1 input.
	Serial   io.Writer
	SerialIn io.Reader
	// NoACPI boots without ACPI tables (no RSDP is passed).
	NoACPI bool
	// Log receives verbose machine messages (nil: none).
	Log io.Writer
	// Reboot makes a guest reset restart the machine in place (reset.go):
	// Run goes on with the same devices. Without it Run returns ExitReset
	// (QEMU's -no-reboot).
	Reboot bool
	// Events, when set, receives QMP events (SHUTDOWN, RESET, STOP, RESUME,
	// POWERDOWN, DEVICE_DELETED) with their data.
	Events func(event string, data any)
}

// DiskConfig is one -disk or -drive: an image and its virtio-blk device.
type DiskConfig = qemuopt.DriveSpec

// ExitReason says how a machine's run ended.
type ExitReason int

const (
	// ExitPowerOff: the guest powered off (ACPI S5 or a KVM shutdown event).
	ExitPowerOff ExitReason = iota
	// ExitReset: the guest asked for a reset (i8042 0xFE, 0xcf9, KVM reset).
	ExitReset
	// ExitStopped: Shutdown was called or the context was cancelled.
	ExitStopped
	// ExitTripleFault: a vCPU triple-faulted (KVM_EXIT_SHUTDOWN).
	ExitTripleFault
	// ExitCrash: the guest reported a crash (KVM_SYSTEM_EVENT_CRASH).
	ExitCrash
	// ExitError: KVM or the host failed; the error says how.
	ExitError
)

var exitNames = [...]string{"power-off", "reset", "stopped", "triple fault", "guest crash", "error"}

func (r ExitReason) String() string {
	if r >= 0 && int(r) < len(exitNames) {
		return exitNames[r]
	}
	return fmt.Sprintf("exit(%d)", int(r))
}

// Machine is a built PC. It composes the parts New builds, each with one
// job:
//
//   - lifecycle (run.go): the vCPUs' run, pause, stops and run state;
//     embedded, so Run, Pause, Resume, Shutdown, PowerOff, Reset, Status
//     and Emit are the Machine's methods;
//   - vmSnapshots (savevm.go) over stateStream (vmsections.go): savevm,
//     loadvm and delvm; embedded for SaveVM, LoadVM, DeleteVM and
//     VMSnapshots;
//   - powerOn (reset.go): the in-place reset Run does on a guest reset;
//   - loader (load.go): kernel, initrd, ACPI tables and the boot vCPU;
//   - board (devices.go): the devices every PC has; devmgr.Manager: the
//     PCI devices; blocknodes.Registry: the images;
//   - guestRAM (ram.go) and vcpuSet (vcpus.go): the memory and vCPUs.
//
// Lock order across the parts: vmSnapshots.mu, then devmgr.Manager's,
// then pci.Bus's, then a device's own, then the block registry's.
// lifecycle.runMu is held by Run alone. The fields below are set by New
// and only read afterwards, until Close.
type Machine struct {
	*lifecycle
	*vmSnapshots

	vm        *vmm.VM
	mem       *guestmem.Memory
	pio, mmio *vmm.Bus
	ram       *guestRAM
	cpus      *vcpuSet
	board     *board
	devices   *devmgr.Manager      // PCI slots, qdev ids, hotplug
	blocks    *blocknodes.Registry // block nodes (images)
	boot      *loader
	// closers release the KVM side in the reverse of their order (vCPUs,
	// RAM, VM, /dev/kvm), after the devices and block nodes.
	closers []func() error
}

// New builds a PC from cfg and loads its kernel; vCPUs start in Run.
func New(cfg Config) (m *Machine, err error) {
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 256
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	// RAM above 3 GiB continues at 4 GiB and ends by 1 TiB; the 64-bit
	// PCI window follows it within the CPU's address width (pciWindows).
	if maxMiB := (1<<40 - highRAMBase + lowRAMMax) >> 20; cfg.MemoryMiB < 2 || cfg.MemoryMiB > maxMiB {
		return nil, fmt.Errorf("memory %d MiB out of range (2 .. %d MiB)", cfg.MemoryMiB, maxMiB)
	}
	// 255: the xAPIC IDs 0..254 (0xff is the broadcast ID), as the MADT
	// lists one Local APIC per vCPU.
	if cfg.CPUs < 1 || cfg.CPUs > 255 {
		return nil, fmt.Errorf("cpu count %d out of range (1..255)", cfg.CPUs)
	}
	logf := func(string, ...any) {}
	pio, mmio := &vmm.Bus{}, &vmm.Bus{}
	if cfg.Log != nil {
		logf = func(f string, a ...any) { fmt.Fprintf(cfg.Log, "petrel: "+f+"\n", a...) }
		pio.OnUnhandled = (&oddLog{what: "port", logf: logf}).note
		mmio.OnUnhandled = (&oddLog{what: "mmio", logf: logf}).note
	}
	var (
		closers []func() error
		devices *devmgr.Manager
		blocks  *blocknodes.Registry
	)
	defer func() {
		if err != nil {
			release(devices, blocks, closers)
		}
	}()
	t0, clock := time.Now(), newSetupClock()
	kvm, err := vmm.Open()
	if err != nil {
		return nil, err
	}
	closers = append(closers, kvm.Close)
	vm, err := kvm.CreateVM()
	if err != nil {
		return nil, err
	}
	closers = append(closers, vm.Close)
	clock.step("vm")
	chips, err := setupIRQChips(vm, logf)
	if err != nil {
		return nil, err
	}
	clock.step("irqchip")
	mem := guestmem.New()
	ram, err := newGuestRAM(vm, mem, uint64(cfg.MemoryMiB)<<20)
	if err != nil {
		return nil, err
	}
	closers = append(closers, ram.free)
	clock.step("ram")
	cpuid, err := kvm.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	// The board's devices stop the run (S5, a reset) and the run needs
	// the board: the lifecycle is made first and completed below, before
	// anything can run.
	run := &lifecycle{reboot: cfg.Reboot, serialIn: cfg.SerialIn, events: cfg.Events, logf: logf}
	b, err := newBoard(boardWiring{
		vm: vm, pio: pio, mmio: mmio, physBits: physBits(cpuid), memoryMiB: cfg.MemoryMiB,
		serial: cfg.Serial, powerOff: run.PowerOff, reset: run.Reset, logf: logf,
		// The hotplug controller is built before the manager it reports
		// ejects to; no guest runs before devices is set.
		eject: func(slot int) { devices.Ejected(slot) },
	})
	if err != nil {
		return nil, err
	}
	clock.step("board")
	blocks = blocknodes.New()
	devices = newDeviceManager(b, vm, mem, blocks, run.Emit, logf)
	cpus, err := newVCPUs(kvm, vm, cfg.CPUs, cfg.CPU, pio, mmio, logf)
	if err != nil {
		return nil, err
	}
	closers = append(closers, cpus.close)
	clock.step("vcpus")
	if err = plugConfigured(cfg, devices, blocks); err != nil {
		return nil, err
	}
	clock.step("devices")
	boot := &loader{cfg: cfg, mem: mem, bus: b.pci, hp: b.hotplug, boot: cpus.vcpus[0],
		overrides: cpus.overrides, logf: logf}
	if err = boot.load(); err != nil {
		return nil, err
	}
	clock.step("boot")
	run.vcpus, run.uart, run.devices, run.shutdownResets = cpus.vcpus, b.uart, devices, cpus.shutdownResets
	run.reset = (&powerOn{vm: vm, chips: chips, vcpus: cpus.vcpus, cpus: cpus.powerOn, board: b,
		boot: boot, logf: logf}).reset
	if cfg.Log != nil {
		run.stats = &runStats{vcpus: cpus.vcpus, pio: pio, mmio: mmio, ram: ram, logf: logf}
	}
	snaps := &vmSnapshots{blocks: blocks, devices: devices, run: run, logf: logf, state: &stateStream{
		memoryMiB: cfg.MemoryMiB, cpus: cfg.CPUs, cpu: cfg.CPU, vm: vm, vcpus: cpus.vcpus, msrs: cpus.msrs,
		ram: ram, board: b, devices: devices, clock: &run.clock,
	}}
	// The kernel file (and a decompressed vmlinux) are garbage now; hand
	// that memory back so the VMM's resident set stays small.
	debug.FreeOSMemory()
	clock.step("free")
	logf("machine built in %v: %d MiB, %d vCPU(s), boot %s, entry %#x (%v)", time.Since(t0).Round(time.Microsecond),
		cfg.MemoryMiB, cfg.CPUs, boot.info.protocol, boot.info.entry, clock)
	return &Machine{lifecycle: run, vmSnapshots: snaps, vm: vm, mem: mem, pio: pio, mmio: mmio, ram: ram,
		cpus: cpus, board: b, devices: devices, blocks: blocks, boot: boot, closers: closers}, nil
}

// setupIRQChips creates the in-kernel irqchip and PIT, places KVM's TSS
// and identity-map pages, and returns the chips' power-on state, which a
// reset restores.
func setupIRQChips(vm *vmm.VM, logf func(string, ...any)) (*vmm.IRQChipState, error) {
	// KVM's API document calls both required on Intel hosts (VMX without
	// unrestricted guest runs real mode in vm86 and needs them); on
	// others the ioctls may fail, which is harmless.
	if err := vm.SetTSSAddr(tssAddr); err != nil {
		logf("%v (continuing: not needed by this host)", err)
	}
	if err := vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		logf("%v (continuing: not needed by this host)", err)
	}
	if err := vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	// The guest uses the IOAPIC (the MADT says so); the 8259s stay masked
	// so that no interrupt arrives twice.
	if err := vm.MaskPIC(); err != nil {
		return nil, err
	}
	// ISA IRQ 0 (the PIT) is IOAPIC pin 2, as the MADT's interrupt source
	// override says and as on QEMU's pc; KVM's default routes it to pin 0.
	if err := vm.RouteToIOAPICPin(0, 2); err != nil {
		return nil, err
	}
	if err := vm.CreatePIT2(); err != nil {
		return nil, err
	}
	return vm.SaveIRQChips()
}

// Close releases the VM, its memory and devices. Run must have returned.
func (m *Machine) Close() error {
	err := release(m.devices, m.blocks, m.closers)
	m.closers = nil
	return err
}

// release closes what a machine (or a New that failed part way) holds:
// the devices first, as their queue workers use guest memory and disk
// images, then the block nodes, then closers last to first. Nil parts
// were not built. It returns the first error.
func release(devices *devmgr.Manager, blocks *blocknodes.Registry, closers []func() error) error {
	var first error
	if devices != nil {
		first = devices.Close()
	}
	if blocks != nil {
		if err := blocks.Close(); err != nil && first == nil {
			first = err
		}
	}
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// The accessors below are what other packages use: machine/pcqmp
// (PCI, Devices, Blocks, PressPowerButton), the whole-VM tests
// (BootProtocol) and vmm's benchmark guest (MMIO, VCPUs).

// PCI is PCI bus 0.
func (m *Machine) PCI() *pci.Bus { return m.board.pci }

// Devices is the device manager: PCI slots, qdev ids, -device/device_add,
// hot-unplug.
func (m *Machine) Devices() *devmgr.Manager { return m.devices }

// Blocks is the block-node registry.
func (m *Machine) Blocks() *blocknodes.Registry { return m.blocks }

// MMIO is the memory-mapped I/O bus (its Unhandled counter).
func (m *Machine) MMIO() *vmm.Bus { return m.mmio }

// VCPUs are the machine's vCPUs (exit counters, registers).
func (m *Machine) VCPUs() []*vmm.VCPU { return m.cpus.vcpus }

// BootProtocol reports how the kernel was entered.
func (m *Machine) BootProtocol() BootProtocol { return m.boot.info.protocol }

// PressPowerButton raises the ACPI power button event (GPE0 bit 2), as
// QMP system_powerdown does.
func (m *Machine) PressPowerButton() { m.board.gpe.PressPowerButton() }

// maxKernelSize bounds a kernel file (a bzImage is tens of MiB).
const maxKernelSize = 512 << 20

// readFileMax reads a regular file of at most max bytes: a device such as
// /dev/zero or an oversized file is refused before anything is allocated.
// kernelHeadSize is how much of a bzImage the loader reads before it
// knows it needs all of it: the boot sector and setup header, and setup
// code up to 64 KiB (boot.rst: setup_sects is at most 127 sectors).
const kernelHeadSize = 64 << 10

// readKernelHead reads the kernel file at path whole when it is an ELF
// vmlinux or no larger than kernelHeadSize (whole is true), and otherwise
// only its first kernelHeadSize bytes: a bzImage booted by PVH from the
// decompressed-kernel cache is never read whole (under an emulated CPU,
// reading and freeing a 14 MB bzImage cost a nested boot half a second).
func readKernelHead(path string) (b []byte, whole bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s is not a regular file", path)
	}
	if uint64(fi.Size()) > maxKernelSize {
		return nil, false, fmt.Errorf("%s is %d MiB, more than the %d MiB allowed", path, fi.Size()>>20, maxKernelSize>>20)
	}
	b = make([]byte, min(fi.Size(), kernelHeadSize))
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) == fi.Size() {
		return b, true, nil
	}
	if len(b) >= 4 && string(b[:4]) == "\x7fELF" {
		whole, err := readFileMax(path, maxKernelSize)
		return whole, err == nil, err
	}
	return b, false, nil
}

func readFileMax(path string, max uint64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if uint64(fi.Size()) > max {
		return nil, fmt.Errorf("%s is %d MiB, more than the %d MiB allowed", path, fi.Size()>>20, max>>20)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, nil
}
