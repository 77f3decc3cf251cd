//go:build amd64

package pc

import (
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/vmm"
)

// vcpuSet is what building the vCPUs yields: the vCPUs and the facts
// about them that the run, the reset and the saved state need.
type vcpuSet struct {
	vcpus []*vmm.VCPU
	// powerOn is each vCPU's state right after KVM_CREATE_VCPU and
	// KVM_SET_CPUID2, before the boot setup touches it: what a machine
	// reset writes back (reset.go).
	powerOn []*vmm.VCPUState
	// msrs are the MSRs KVM saves and restores (KVM_GET_MSR_INDEX_LIST),
	// read once: the power-on state and every saved state list the same.
	msrs []uint32
	// overrides are the CPUID features KVM_SET_CPUID2 did not take as
	// given (kvm_pvm forces its own value outside its supported mask).
	overrides []string
	// shutdownResets: KVM resets a vCPU before KVM_EXIT_SHUTDOWN (AMD),
	// so a triple fault's registers are not there to report.
	shutdownResets bool
}

// newVCPUs creates cpus vCPUs in vm with the CPUID that cpuFlags ("-cpu",
// "" = host) asks for, dispatching port and MMIO exits to pio and mmio.
// On an error the vCPUs made so far are closed.
func newVCPUs(kvm *vmm.KVM, vm *vmm.VM, cpus int, cpuFlags string, pio, mmio *vmm.Bus,
	logf func(string, ...any)) (_ *vcpuSet, err error) {
	set := &vcpuSet{}
	defer func() {
		if err != nil {
			set.close()
		}
	}()
	host, err := kvm.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	set.shutdownResets = vmm.ShutdownResetsVCPU(host, kvm.PVM)
	cc := vmm.CPUIDConfig{CPUs: cpus, PVM: kvm.PVM, Brand: vmm.HostBrand()}
	if cpuFlags != "" {
		if cc.Set, cc.Clear, err = vmm.ParseCPUFlag(cpuFlags); err != nil {
			return nil, err
		}
	}
	if kvm.PVM {
		logf("host is kvm_pvm: hiding cx16 and xsave/avx from the guest")
	}
	if set.msrs, err = kvm.MSRIndexList(); err != nil {
		return nil, err
	}
	for i := 0; i < cpus; i++ {
		v, err := vm.CreateVCPU(i)
		if err != nil {
			return nil, err
		}
		set.vcpus = append(set.vcpus, v)
		v.PIO, v.MMIO = pio, mmio
		v.Handler = pcExits{}
		want := vmm.GuestCPUID(host, i, cc)
		if err := v.SetCPUID(want); err != nil {
			return nil, err
		}
		s, err := v.SaveState(set.msrs)
		if err != nil {
			return nil, err
		}
		set.powerOn = append(set.powerOn, s)
		if i > 0 {
			continue
		}
		// The CPUID a vCPU reports back is what the guest sees; every
		// vCPU gets the same features, so the first one tells.
		got, err := v.CPUID()
		if err != nil {
			return nil, err
		}
		if set.overrides = vmm.Overridden(want, got); len(set.overrides) > 0 {
			logf("the host overrode these CPUID features (the guest sees the host's value): %s",
				strings.Join(set.overrides, " "))
		}
	}
	return set, nil
}

// close closes every vCPU, the last made first; none may be running.
func (s *vcpuSet) close() error {
	var first error
	for i := len(s.vcpus) - 1; i >= 0; i-- {
		if err := s.vcpus[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// pcExits takes the exits vmm leaves to the PC (vmm serves the PIO and
// MMIO buses itself): HLT, which reaches user space only without an
// in-kernel irqchip. It holds nothing, so the hot path neither locks nor
// allocates.
type pcExits struct{}

// HandleExit implements vmm.ExitHandler.
func (pcExits) HandleExit(v *vmm.VCPU, reason uint32) vmm.Stop {
	if reason == vmm.ExitHLT {
		return vmm.StopHalted
	}
	return v.Fail(fmt.Errorf("vcpu %d: unexpected exit reason %d", v.ID, reason))
}
