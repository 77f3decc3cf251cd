//go:build ppc64 || ppc64le

package pseries

import (
	"errors"
	"fmt"
	"sync"

	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// Register bits the entry state uses (Power ISA 3.0B: MSR, LPCR).
const (
	msrSF   = 1 << 63 // 64-bit mode
	msrME   = 1 << 12 // machine check enable
	lpcrILE = 1 << 25 // LPCR[ILE]: take interrupts little-endian
)

// kvmVM is a pseries VM on vmm's KVM layer on a POWER host. It owns the
// KVM objects and the guest RAM; close releases them in the reverse of
// the order they depend on each other: vCPUs (their kvm_run mappings),
// the VM (its memory slot points into ram until the VM fd is closed, and
// PR KVM's hash table is the VM's), ram, then /dev/kvm.
type kvmVM struct {
	kvm      *vmm.KVM
	vm       *vmm.VM
	m        *Machine
	layout   Layout
	vcpus    []*vmm.VCPU
	exits    []*cpuExits
	ram      []byte
	firstErr error     // the first vCPU failure, what Run returns
	errOnce  sync.Once // guards firstErr
}

// Run boots cfg on KVM and returns when the guest powers off, reboots or
// fails. Each vCPU runs vmm's loop on its own goroutine locked to its OS
// thread, with the machine as its exit handler.
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
	for i := range v.vcpus {
		wg.Add(1)
		go func(c *vmm.VCPU, h *cpuExits) {
			defer wg.Done()
			v.runVCPU(c, h)
		}(v.vcpus[i], v.exits[i])
	}
	<-v.m.Done()
	// A vCPU inside KVM_RUN leaves it with EINTR, one about to enter sees
	// immediate_exit, one parked in start-cpu's wait sees Done.
	for _, c := range v.vcpus {
		c.Kick(vmm.StopRequested)
	}
	wg.Wait()
	if v.firstErr != nil {
		return ExitError, v.firstErr
	}
	return v.m.ExitReason(), nil
}

// runVCPU starts one vCPU (at once for the boot CPU, at start-cpu for a
// secondary) and runs it until it stops; a failure stops the machine.
func (v *kvmVM) runVCPU(c *vmm.VCPU, h *cpuExits) {
	ok, err := h.start(v.layout.Entry, v.layout.FDT)
	if err != nil {
		v.fail(err)
		return
	}
	if !ok {
		return
	}
	switch s := c.Run(); s {
	case vmm.StopError:
		v.fail(c.Err())
	case vmm.StopRequested, vmm.StopPowerOff, vmm.StopReset:
		// The machine stopped (RTAS power-off or reboot, or a kick).
	default:
		v.fail(fmt.Errorf("vCPU %d: %v", c.ID, s))
	}
}

// fail records the first vCPU failure and stops the machine: Run wakes on
// Done and kicks the other vCPUs.
func (v *kvmVM) fail(err error) {
	v.errOnce.Do(func() { v.firstErr = err })
	v.m.RequestExit(ExitError)
}

// newKVMVM builds the VM through vmm and loads the guest. Order matters:
// the VM's PAPR capability is checked before anything is allocated; the
// vCPUs exist before the hash table (PR KVM's is named by each vCPU's
// SDR1); the interrupt output and the MMU configurer are in place before
// a vCPU can run a hypercall that uses them; Boot writes the device tree
// last, once the hash table's size (ibm,pft-size) is known.
func newKVMVM(cfg Config) (*kvmVM, error) {
	v := &kvmVM{}
	ok := false
	defer func() {
		if !ok {
			v.close()
		}
	}()
	var err error
	if v.kvm, err = vmm.Open(); err != nil {
		return nil, err
	}
	if v.vm, err = v.kvm.CreateVMType(cfg.KVMType); err != nil {
		return nil, err
	}
	if err := v.vm.CheckPAPR(); err != nil {
		return nil, fmt.Errorf("KVM cannot run PAPR guests here: %w", err)
	}
	if v.ram, err = vmm.AllocGuestRAM(cfg.RAMSize); err != nil {
		return nil, err
	}
	if _, err := v.vm.AddMemory(0, v.ram, false); err != nil {
		return nil, err
	}
	mem := guestmem.New()
	if err := mem.Add(0, v.ram); err != nil {
		return nil, err
	}
	if v.m, err = New(mem, Options{CPUs: cfg.CPUs, Console: cfg.Console, NVRAMPath: cfg.NVRAMPath, Log: cfg.Log}); err != nil {
		return nil, err
	}
	for _, c := range v.m.CPUs() {
		if err := v.addVCPU(c); err != nil {
			return nil, err
		}
	}
	v.m.SetInterruptOutput(v.interruptLine)
	v.m.SetMMUConfigurer(func(c MMUConfig) error { return v.vm.ConfigureV3MMU(c.Radix, c.GTSE, c.ProcessTable) })
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

// addVCPU creates c's vCPU in PAPR mode with the machine as its exit
// handler. MMIO is left without a bus: the PHB window is empty.
func (v *kvmVM) addVCPU(c *CPU) error {
	vc, err := v.vm.CreateVCPU(int(c.Server))
	if err != nil {
		return err
	}
	v.vcpus = append(v.vcpus, vc)
	h := newCPUExits(v.m, c, kvmControl{vc})
	v.exits = append(v.exits, h)
	vc.Handler = h
	return vc.EnablePAPR()
}

// setupHTAB gives the guest its hash page table, of the size QEMU picks
// for the RAM, and returns its shift for ibm,pft-size (vmm.VM.SetupHashTable:
// KVM's under HV, ours under PR). KVM-HV nested in a pseries partition has
// none and runs its guests in radix mode only: the VM starts with a radix
// process table entry (no table yet; the guest registers one with
// H_REGISTER_PROC_TBL), and shift 0 leaves ibm,pft-size out.
func (v *kvmVM) setupHTAB(ram uint64) (uint32, error) {
	shift, err := v.vm.SetupHashTable(htabShiftFor(ram), v.vcpus)
	if !errors.Is(err, vmm.ErrRadixOnly) {
		return shift, err
	}
	radix := MMUConfig{Radix: true, GTSE: true, ProcessTable: pate1GR}
	if err := v.vm.ConfigureV3MMU(radix.Radix, radix.GTSE, radix.ProcessTable); err != nil {
		return 0, err
	}
	v.m.initMMU(radix)
	return 0, nil
}

// interruptLine is the XICS output: KVM_INTERRUPT on the server's vCPU.
// The ICS calls it with its lock held, on the goroutine that changed the
// ICS (a vCPU's H_IPI, H_EOI or RTAS call, or a device raising a source):
// POWER takes KVM_INTERRUPT from any thread, and it takes no lock of the
// machine's.
// A failure is logged, not fatal: the guest sees a lost interrupt.
func (v *kvmVM) interruptLine(server uint32, raise bool) {
	if int(server) >= len(v.vcpus) {
		return
	}
	if err := v.vcpus[server].SetExternalInterrupt(raise); err != nil {
		v.m.logf("%v", err)
	}
}

func (v *kvmVM) close() {
	for _, c := range v.vcpus {
		c.Close()
	}
	if v.m != nil {
		v.m.NVRAM().Close()
	}
	if v.vm != nil {
		v.vm.Close()
	}
	if v.ram != nil {
		vmm.FreeGuestRAM(v.ram)
	}
	if v.kvm != nil {
		v.kvm.Close()
	}
}

// kvmControl is a vCPU's cpuControl on KVM.
type kvmControl struct{ v *vmm.VCPU }

// EnterAt sets the registers a CPU starts with: 64-bit real mode at pc
// with r3 (for the boot CPU r3 = the device tree, r4 = kernel base 0 and
// r5 = 0: "no Open Firmware client interface", Linux's flattened-tree
// entry convention). MSR is SF|ME only: IR and DR off (real mode), EE
// off, big-endian (MSR[LE] 0), the state QEMU's rtas_start_cpu gives a
// started CPU too.
func (c kvmControl) EnterAt(pc, r3 uint64) error {
	r, err := c.v.Regs()
	if err != nil {
		return err
	}
	r.PC, r.MSR = pc, msrSF|msrME
	r.GPR = [32]uint64{}
	r.GPR[3] = r3
	return c.v.SetRegs(r)
}

// SetInterruptsLE programs LPCR[ILE] after the guest's H_SET_MODE(LE).
func (c kvmControl) SetInterruptsLE(le bool) error {
	lpcr := uint64(0)
	if le {
		lpcr = lpcrILE
	}
	if err := c.v.SetOneReg(vmm.RegPPCLPCR, lpcr); err != nil {
		return fmt.Errorf("setting LPCR[ILE]: %w", err)
	}
	return nil
}
