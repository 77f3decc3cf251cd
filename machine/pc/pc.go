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
// an entry failure or a KVM internal error. Shutdown, Pause/Resume and the
// device manager work from any goroutine while Run runs. Other
// packages reach the parts through VM() (event router, MSI, IRQ lines,
// memory slots), Memory(), PIO()/MMIO() (buses), PCI(), Serial(), GPE(),
// Hotplug(), VCPUs() (exit counters), Devices() (the device manager) and
// Blocks() (the block-node registry). QMP is served by machine/pcqmp.
//
// Layout (docs/ARCHITECTURE.md): RAM below 3 GiB and from 4 GiB; e820
// reserves 0x9fc00-0xfffff (ACPI tables at 0xe0000) and 0xfc000000-4 GiB
// (IOAPIC, LAPIC, KVM's TSS and identity-map pages). The 8259s are left
// masked and ISA IRQ 0 is routed to IOAPIC pin 2, as the MADT says.
package pc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/serial"
	"github.com/petrel-vmm/petrel/firmware/bzimage"
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

// Machine is a built PC.
type Machine struct {
	cfg   Config
	kvm   *vmm.KVM
	vm    *vmm.VM
	mem   *guestmem.Memory
	ram   [][]byte
	pio   *vmm.Bus
	mmio  *vmm.Bus
	vcpus []*vmm.VCPU
	boot  bootInfo

	board   board                // the platform devices (devices.go)
	devices *devmgr.Manager      // PCI slots, qdev ids, hotplug
	blocks  *blocknodes.Registry // block nodes (images)
	powerOn powerOnState         // what a reset restores (reset.go)
	state   runState
	clock   vmClock     // the guest's running time (snapshots record it)
	snapMu  sync.Mutex  // one VM snapshot operation at a time (savevm.go)
	saving  *kvmCapture // the KVM state being saved (vmparts.go)
	msrs    []uint32    // the MSRs KVM saves and restores (KVM_GET_MSR_INDEX_LIST)

	closers []func() error
	// cpuidOverrides are features KVM_SET_CPUID2 did not take as given.
	cpuidOverrides []string
	// shutdownResets: KVM resets a vCPU before KVM_EXIT_SHUTDOWN (AMD),
	// so a triple fault's registers are not there to report.
	shutdownResets bool
	logf           func(format string, args ...any)
}

// runState is where a machine is in its life; its fields are safe to read
// from any goroutine.
type runState struct {
	runMu    sync.Mutex // one Run at a time
	paused   atomic.Bool
	started  atomic.Bool
	finished atomic.Bool
	// stopWanted is a stop asked from outside (Shutdown, PowerOff, the
	// context): a vmm.Stop, never cleared, so that one arriving while a
	// reset is in progress is not lost.
	stopWanted atomic.Int32
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
	if cfg.CPUs < 1 || cfg.CPUs > 255 {
		return nil, fmt.Errorf("cpu count %d out of range (1..255)", cfg.CPUs)
	}
	m = &Machine{cfg: cfg, mem: guestmem.New(), pio: &vmm.Bus{}, mmio: &vmm.Bus{}}
	m.logf = func(string, ...any) {}
	if cfg.Log != nil {
		m.logf = func(f string, a ...any) { fmt.Fprintf(cfg.Log, "petrel: "+f+"\n", a...) }
		m.pio.OnUnhandled = (&oddLog{what: "port", logf: m.logf}).note
		m.mmio.OnUnhandled = (&oddLog{what: "mmio", logf: m.logf}).note
	}
	built := m
	defer func() {
		if err != nil {
			built.Close() // m itself is nil on the error returns
		}
	}()
	t0 := time.Now()
	if m.kvm, err = vmm.Open(); err != nil {
		return nil, err
	}
	m.closers = append(m.closers, m.kvm.Close)
	if m.vm, err = m.kvm.CreateVM(); err != nil {
		return nil, err
	}
	m.closers = append(m.closers, m.vm.Close)
	if err = m.setupPlatform(); err != nil {
		return nil, err
	}
	if err = m.setupMemory(); err != nil {
		return nil, err
	}
	if err = m.setupDevices(); err != nil {
		return nil, err
	}
	if err = m.setupVCPUs(); err != nil {
		return nil, err
	}
	if err = m.plugConfigured(); err != nil {
		return nil, err
	}
	if err = m.load(); err != nil {
		return nil, err
	}
	// The kernel file (and a decompressed vmlinux) are garbage now; hand
	// that memory back so the VMM's resident set stays small.
	debug.FreeOSMemory()
	m.logf("machine built in %v: %d MiB, %d vCPU(s), boot %s, entry %#x", time.Since(t0).Round(time.Microsecond),
		cfg.MemoryMiB, cfg.CPUs, m.boot.protocol, m.boot.entry)
	return m, nil
}

// setupPlatform creates the in-kernel irqchip and PIT and places KVM's
// TSS and identity-map pages.
func (m *Machine) setupPlatform() (err error) {
	if err := m.vm.SetTSSAddr(tssAddr); err != nil {
		m.logf("%v (continuing: not needed by this host)", err)
	}
	if err := m.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		m.logf("%v (continuing: not needed by this host)", err)
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return err
	}
	if err := m.vm.MaskPIC(); err != nil {
		return err
	}
	// ISA IRQ 0 (the PIT) is IOAPIC pin 2, as the MADT's interrupt source
	// override says and as on QEMU's pc; KVM's default routes it to pin 0.
	if err := m.vm.RouteToIOAPICPin(0, 2); err != nil {
		return err
	}
	if err := m.vm.CreatePIT2(); err != nil {
		return err
	}
	m.powerOn.chips, err = m.vm.SaveIRQChips()
	return err
}

// setupMemory maps RAM below 3 GiB and from 4 GiB, lazily allocated.
func (m *Machine) setupMemory() error {
	size := uint64(m.cfg.MemoryMiB) << 20
	low, high := ramLayout(size)
	for _, r := range []struct{ gpa, size uint64 }{{0, low}, {highRAMBase, high}} {
		if r.size == 0 {
			continue
		}
		b, err := vmm.AllocGuestRAM(r.size)
		if err != nil {
			return err
		}
		m.ram = append(m.ram, b)
		m.closers = append(m.closers, func() error { return vmm.FreeGuestRAM(b) })
		if _, err := m.vm.AddMemory(r.gpa, b, false); err != nil {
			return err
		}
		if err := m.mem.Add(r.gpa, b); err != nil {
			return err
		}
	}
	return nil
}

func (m *Machine) setupVCPUs() error {
	host, err := m.kvm.SupportedCPUID()
	if err != nil {
		return err
	}
	m.shutdownResets = vmm.ShutdownResetsVCPU(host, m.kvm.PVM)
	cc := vmm.CPUIDConfig{CPUs: m.cfg.CPUs, PVM: m.kvm.PVM, Brand: vmm.HostBrand()}
	if m.cfg.CPU != "" {
		if cc.Set, cc.Clear, err = vmm.ParseCPUFlag(m.cfg.CPU); err != nil {
			return err
		}
	}
	if m.kvm.PVM {
		m.logf("host is kvm_pvm: hiding cx16 and xsave/avx from the guest")
	}
	msrs, err := m.kvm.MSRIndexList()
	if err != nil {
		return err
	}
	m.msrs = msrs
	for i := 0; i < m.cfg.CPUs; i++ {
		v, err := m.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		m.closers = append(m.closers, v.Close)
		v.PIO, v.MMIO = m.pio, m.mmio
		v.Handler = m
		want := vmm.GuestCPUID(host, i, cc)
		if err := v.SetCPUID(want); err != nil {
			return err
		}
		if err := m.saveVCPUState(v, msrs); err != nil {
			return err
		}
		if i == 0 {
			got, err := v.CPUID()
			if err != nil {
				return err
			}
			if m.cpuidOverrides = vmm.Overridden(want, got); len(m.cpuidOverrides) > 0 {
				m.logf("the host overrode these CPUID features (the guest sees the host's value): %s",
					strings.Join(m.cpuidOverrides, " "))
			}
		}
		m.vcpus = append(m.vcpus, v)
	}
	return nil
}

// load places the kernel, initrd and boot tables and sets up the boot vCPU.
func (m *Machine) load() error {
	kernel := m.cfg.KernelBytes
	if kernel == nil {
		if m.cfg.Kernel == "" {
			return errors.New("no kernel given")
		}
		b, err := readFileMax(m.cfg.Kernel, maxKernelSize)
		if err != nil {
			return fmt.Errorf("reading kernel: %w", err)
		}
		kernel = b
	}
	initrd := m.cfg.InitrdBytes
	if initrd == nil && m.cfg.Initrd != "" {
		b, err := readFileMax(m.cfg.Initrd, uint64(m.cfg.MemoryMiB)<<20)
		if err != nil {
			return fmt.Errorf("reading initrd: %w", err)
		}
		initrd = b
	}
	e820, err := e820Map(uint64(m.cfg.MemoryMiB) << 20)
	if err != nil {
		return err
	}
	low, _ := ramLayout(uint64(m.cfg.MemoryMiB) << 20)
	rsdp, err := m.buildACPI()
	if err != nil {
		return err
	}
	cmdline, added := withNoXsave(m.cfg.Cmdline, kernel, m.cpuidOverrides)
	if added {
		m.logf("the host shows XSAVE to the guest although it cannot run it; added noxsave to the Linux command line")
	}
	in := bootInput{
		kernel: kernel, initrd: initrd, cmdline: cmdline, e820: e820, rsdp: rsdp,
		lowEnd: low, protocol: m.cfg.Boot, cacheDir: m.cfg.KernelCacheDir,
	}
	if m.cfg.KernelBytes == nil {
		in.kernelPath = m.cfg.Kernel
		if in.cacheDir == "" {
			var note string
			if in.cacheDir, note, err = bzimage.DefaultCacheDir(); err != nil {
				return fmt.Errorf("decompressed-kernel cache: %w (-kernel-cache DIR names one)", err)
			}
			if note != "" {
				m.logf("%s", note)
			}
		}
	}
	t0 := time.Now()
	if m.boot, err = loadKernel(m.mem, in); err != nil {
		return err
	}
	m.logf("kernel loaded by %s in %v", m.boot.protocol, time.Since(t0).Round(time.Microsecond))
	if m.boot.whyNotPVH != nil {
		m.logf("not by pvh: %v", m.boot.whyNotPVH)
	}
	if err := writeBootTables(m.mem, m.boot.protocol == BootLinux64); err != nil {
		return err
	}
	return setupBootCPU(m.vcpus[0], m.boot)
}

// Close releases the VM, its memory and devices. Run must have returned.
func (m *Machine) Close() error {
	// Devices first: their queue workers use guest memory and disk images.
	var errs []error
	if m.devices != nil {
		if err := m.devices.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if m.blocks != nil {
		if err := m.blocks.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	var first error
	if len(errs) > 0 {
		first = errs[0]
	}
	for i := len(m.closers) - 1; i >= 0; i-- {
		if err := m.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	m.closers = nil
	return first
}

// HandleExit takes the exits vmm leaves to the PC (vmm serves the PIO and
// MMIO buses itself): HLT, which reaches user space only without an
// in-kernel irqchip.
func (m *Machine) HandleExit(v *vmm.VCPU, reason uint32) vmm.Stop {
	if reason == vmm.ExitHLT {
		return vmm.StopHalted
	}
	return v.Fail(fmt.Errorf("vcpu %d: unexpected exit reason %d", v.ID, reason))
}

// VM is the KVM VM (EventRouter, MSISignaler, IRQ lines).
func (m *Machine) VM() *vmm.VM { return m.vm }

// Memory is the guest RAM.
func (m *Machine) Memory() *guestmem.Memory { return m.mem }

// PIO and MMIO are the port and memory-mapped I/O buses.
func (m *Machine) PIO() *vmm.Bus  { return m.pio }
func (m *Machine) MMIO() *vmm.Bus { return m.mmio }

// PCI is PCI bus 0.
func (m *Machine) PCI() *pci.Bus { return m.board.pci }

// VCPUs are the machine's vCPUs (exit counters, registers).
func (m *Machine) VCPUs() []*vmm.VCPU { return m.vcpus }

// Serial is COM1.
func (m *Machine) Serial() *serial.UART { return m.board.uart }

// PM is the ACPI PM1 block.
func (m *Machine) PM() *PM { return m.board.pm }

// BootProtocol reports how the kernel was entered.
func (m *Machine) BootProtocol() BootProtocol { return m.boot.protocol }

// GPE is the ACPI GPE0 block (power button, hotplug events).
func (m *Machine) GPE() *acpi.GPE { return m.board.gpe }

// Hotplug is the ACPI PCI hotplug controller.
func (m *Machine) Hotplug() *acpi.Hotplug { return m.board.hotplug }

// PressPowerButton raises the ACPI power button event (GPE0 bit 2), as
// QMP system_powerdown does.
func (m *Machine) PressPowerButton() { m.board.gpe.PressPowerButton() }

// Pause parks every vCPU outside the guest (QMP stop); Resume undoes it.
func (m *Machine) Pause() {
	for _, v := range m.vcpus {
		v.Pause()
	}
	m.state.paused.Store(true)
	m.clock.stop()
}

// Resume lets paused vCPUs run again (QMP cont).
func (m *Machine) Resume() {
	m.state.paused.Store(false)
	if m.state.started.Load() && !m.state.finished.Load() {
		m.clock.start()
	}
	for _, v := range m.vcpus {
		v.Resume()
	}
}

// CPUIDOverrides lists the CPUID features whose guest-visible state the
// host forced to differ from what Petrel set (kvm_pvm does this for bits
// outside its supported mask, e.g. xsave and avx).
func (m *Machine) CPUIDOverrides() []string { return m.cpuidOverrides }

// maxKernelSize bounds a kernel file (a bzImage is tens of MiB).
const maxKernelSize = 512 << 20

// readFileMax reads a regular file of at most max bytes: a device such as
// /dev/zero or an oversized file is refused before anything is allocated.
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
