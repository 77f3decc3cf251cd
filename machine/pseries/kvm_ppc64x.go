//go:build ppc64 || ppc64le

package pseries

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// kvmVM is a pseries VM under KVM on a POWER host.
type kvmVM struct {
	kvm, vm  int
	runSize  int
	m        *Machine
	layout   Layout
	cpus     []*kvmVCPU
	ram      []byte
	htab     []byte // user-space hash table (PR KVM); nil when KVM owns it
	stats    loopStats
	firstErr error
	errOnce  sync.Once
}

type kvmVCPU struct {
	fd  int
	run runView
	cpu *CPU
	tid atomic.Int32 // OS thread id once the goroutine is locked to it
}

// Run boots cfg on KVM and returns when the guest powers off, reboots or
// fails. Each vCPU runs in its own goroutine locked to its OS thread.
func Run(cfg Config) (ExitReason, error) {
	if err := cfg.check(); err != nil {
		return ExitError, err
	}
	v, err := newKVMVM(cfg)
	if err != nil {
		return ExitError, err
	}
	defer v.close()
	if cfg.Input != nil {
		go v.m.VTY().ReadFrom(cfg.Input)
	}
	defer v.m.VTY().Close()

	var wg sync.WaitGroup
	for _, c := range v.cpus {
		wg.Add(1)
		go func(c *kvmVCPU) {
			defer wg.Done()
			if err := v.runVCPU(c); err != nil {
				v.fail(err)
			}
		}(c)
	}
	<-v.m.Done()
	v.kickAll()
	wg.Wait()
	if v.firstErr != nil {
		return ExitError, v.firstErr
	}
	return v.m.ExitReason(), nil
}

func (v *kvmVM) fail(err error) {
	v.errOnce.Do(func() { v.firstErr = err })
	v.m.RequestExit(ExitError)
}

func newKVMVM(cfg Config) (*kvmVM, error) {
	v := &kvmVM{kvm: -1, vm: -1}
	ok := false
	defer func() {
		if !ok {
			v.close()
		}
	}()
	var err error
	if v.kvm, err = unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("opening /dev/kvm: %w", err)
	}
	if ver, err := ioctlVal(v.kvm, kvmGetAPIVersion, 0); err != nil || ver != kvmAPIVersion {
		return nil, fmt.Errorf("KVM API version %d (%v), want %d", ver, err, kvmAPIVersion)
	}
	if v.vm, err = ioctlVal(v.kvm, kvmCreateVM, uintptr(cfg.KVMType)); err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM type %d: %w", cfg.KVMType, err)
	}
	if n, _ := ioctlVal(v.vm, kvmCheckExtension, kvmCapPPCPAPR); n <= 0 {
		return nil, errors.New("KVM cannot run PAPR guests here (no KVM_CAP_PPC_PAPR)")
	}
	if v.runSize, err = ioctlVal(v.kvm, kvmGetVCPUMmapSize, 0); err != nil {
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	v.ram, err = unix.Mmap(-1, 0, int(cfg.RAMSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("allocating %d bytes of guest RAM: %w", cfg.RAMSize, err)
	}
	if err := setUserMemoryRegion(v.vm, 0, 0, v.ram); err != nil {
		return nil, fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	mem := guestmem.New()
	if err := mem.Add(0, v.ram); err != nil {
		return nil, err
	}
	if v.m, err = New(mem, Options{CPUs: cfg.CPUs, Console: cfg.Console, NVRAMPath: cfg.NVRAMPath, Log: cfg.Log}); err != nil {
		return nil, err
	}
	for _, c := range v.m.CPUs() {
		vc, err := v.newVCPU(c)
		if err != nil {
			return nil, err
		}
		v.cpus = append(v.cpus, vc)
	}
	v.m.SetInterruptOutput(v.interruptLine)
	v.m.SetMMUConfigurer(func(c MMUConfig) error { return configureV3MMU(v.vm, c) })
	shift, err := v.setupHTAB(cfg.RAMSize)
	if err != nil {
		return nil, err
	}
	if v.layout, err = v.m.Boot(cfg.Kernel, cfg.Initrd, cfg.Cmdline, shift); err != nil {
		return nil, err
	}
	ok = true
	return v, nil
}

func (v *kvmVM) newVCPU(c *CPU) (*kvmVCPU, error) {
	fd, err := ioctlVal(v.vm, kvmCreateVCPU, uintptr(c.Server))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", c.Server, err)
	}
	vc := &kvmVCPU{fd: fd, cpu: c}
	raw, err := unix.Mmap(fd, 0, v.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mapping kvm_run of vCPU %d: %w", c.Server, err)
	}
	vc.run = runView{raw}
	// PAPR mode: hypercalls exit to us as KVM_EXIT_PAPR_HCALL (QEMU's
	// kvmppc_set_papr enables it per vCPU the same way).
	if err := enableCap(fd, &kvmEnableCap{Cap: kvmCapPPCPAPR}); err != nil {
		return nil, fmt.Errorf("enabling KVM_CAP_PPC_PAPR on vCPU %d: %w", c.Server, err)
	}
	// PR KVM keeps a HIOR (interrupt vector base); a PAPR guest wants its
	// vectors at 0. HV KVM has no such register, so ENOENT/EINVAL is fine.
	if err := setOneReg(fd, kvmRegPPCHIOR, 0); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("setting HIOR on vCPU %d: %w", c.Server, err)
	}
	return vc, nil
}

// setupHTAB gives the guest its hash page table: HV KVM allocates it
// itself (KVM_PPC_ALLOCATE_HTAB); PR KVM, which lacks that ioctl, reads
// one from our memory through SDR1 = host address | (shift - 18), as QEMU
// does for PR.
func (v *kvmVM) setupHTAB(ram uint64) (uint32, error) {
	shift := htabShiftFor(ram)
	got, err := allocateHTAB(v.vm, shift)
	switch {
	case err == nil:
		return got, nil
	case errors.Is(err, unix.EOPNOTSUPP):
		// KVM-HV nested in a pseries partition runs its guests in radix
		// mode only: no hash table, ibm,pft-size is left out.
		if n, _ := ioctlVal(v.vm, kvmCheckExtension, kvmCapPPCMMURadix); n <= 0 {
			return 0, fmt.Errorf("KVM offers neither a hash page table (%v) nor radix", err)
		}
		radix := MMUConfig{Radix: true, GTSE: true, ProcessTable: pate1GR}
		if err := configureV3MMU(v.vm, radix); err != nil {
			return 0, fmt.Errorf("KVM_PPC_CONFIGURE_V3_MMU (radix): %w", err)
		}
		v.m.initMMU(radix)
		return 0, nil
	case !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL):
		return 0, fmt.Errorf("KVM_PPC_ALLOCATE_HTAB: %w", err)
	}
	size := 1 << shift
	// SDR1 needs the table aligned to its size: over-allocate and align.
	buf, err := unix.Mmap(-1, 0, 2*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("allocating the hash page table: %w", err)
	}
	off := (uint64(size) - hostAddr(buf)%uint64(size)) % uint64(size)
	v.htab = buf
	sdr1 := (hostAddr(buf) + off) | uint64(shift-18)
	for _, c := range v.cpus {
		var s kvmSregs
		if err := getSregs(c.fd, &s); err != nil {
			return 0, fmt.Errorf("KVM_GET_SREGS: %w", err)
		}
		s.SDR1 = sdr1
		if err := setSregs(c.fd, &s); err != nil {
			return 0, fmt.Errorf("KVM_SET_SREGS (SDR1): %w", err)
		}
	}
	return shift, nil
}

// interruptLine is the XICS output: KVM_INTERRUPT on the server's vCPU.
func (v *kvmVM) interruptLine(server uint32, raise bool) {
	if int(server) >= len(v.cpus) {
		return
	}
	if err := setExternalInterrupt(v.cpus[server].fd, raise); err != nil {
		v.m.logf("KVM_INTERRUPT on vCPU %d: %v", server, err)
	}
}

// enterAt sets the registers a CPU starts with: 64-bit real mode at pc
// with r3 (and, for the boot CPU, r4 = kernel base 0 and r5 = 0: "no Open
// Firmware client interface", Linux's flattened-tree entry convention).
func (c *kvmVCPU) enterAt(pc, r3 uint64) error {
	var r kvmRegs
	if err := getRegs(c.fd, &r); err != nil {
		return fmt.Errorf("KVM_GET_REGS: %w", err)
	}
	r.PC, r.MSR = pc, msrSF|msrME
	r.GPR = [32]uint64{}
	r.GPR[3] = r3
	if err := setRegs(c.fd, &r); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

// The kvmVCPU methods below make it the run loop's vcpuDriver (loop.go).

func (c *kvmVCPU) Run() error {
	_, err := ioctlVal(c.fd, kvmRun, 0)
	return err
}

func (c *kvmVCPU) ClearImmediateExit()         { c.run.setImmediateExit(false) }
func (c *kvmVCPU) ExitReason() uint32          { return c.run.exitReason() }
func (c *kvmVCPU) PAPRHcall() *kvmRunPAPRHcall { return c.run.papr() }
func (c *kvmVCPU) MMIO() *kvmRunMMIO           { return c.run.mmio() }
func (c *kvmVCPU) EnterAt(pc, r3 uint64) error { return c.enterAt(pc, r3) }

// SetInterruptsLE programs LPCR[ILE] after the guest's H_SET_MODE(LE).
func (c *kvmVCPU) SetInterruptsLE(le bool) error {
	lpcr := uint64(0)
	if le {
		lpcr = lpcrILE
	}
	if err := setOneReg(c.fd, kvmRegPPCLPCR64, lpcr); err != nil {
		return fmt.Errorf("setting LPCR[ILE]: %w", err)
	}
	return nil
}

// runVCPU runs c's loop on its own locked OS thread, recording the thread
// id so kickAll can interrupt KVM_RUN.
func (v *kvmVM) runVCPU(c *kvmVCPU) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	return v.m.runVCPU(c, c.cpu, v.layout.Entry, v.layout.FDT, &v.stats)
}

// kickAll forces every vCPU out of KVM_RUN: immediate_exit stops a vCPU
// about to enter, and SIGURG (which the Go runtime already handles and
// ignores when it did not send it) interrupts one inside with EINTR.
func (v *kvmVM) kickAll() {
	for _, c := range v.cpus {
		c.run.setImmediateExit(true)
		c.cpu.signal()
		if tid := c.tid.Load(); tid != 0 {
			unix.Tgkill(os.Getpid(), int(tid), unix.SIGURG)
		}
	}
}

func (v *kvmVM) close() {
	for _, c := range v.cpus {
		unix.Munmap(c.run.raw)
		unix.Close(c.fd)
	}
	if v.m != nil {
		v.m.NVRAM().Close()
	}
	if v.htab != nil {
		unix.Munmap(v.htab)
	}
	if v.vm >= 0 {
		unix.Close(v.vm)
	}
	if v.ram != nil {
		unix.Munmap(v.ram)
	}
	if v.kvm >= 0 {
		unix.Close(v.kvm)
	}
}
