package pseries

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmm"
)

// cpuControl is what the exit handler needs of its vCPU besides the exit
// itself. On ppc64 hosts it is the vmm vCPU's registers (run_ppc64x.go:
// vmm.VCPU.SetRegs and SetOneReg); the tests use a recorder, since KVM
// for POWER cannot run on the machines the tests run on.
type cpuControl interface {
	// EnterAt resets the registers: 64-bit real mode (MSR SF|ME) at pc,
	// r3 as given, the other GPRs 0.
	EnterAt(pc, r3 uint64) error
	// SetInterruptsLE sets LPCR[ILE] (interrupts taken little-endian).
	SetInterruptsLE(le bool) error
}

// cpuExits is the machine's side of one vCPU. vmm's run loop
// (vmm.VCPU.Run) serves what every architecture shares: kicks, KVM
// failures, and MMIO, where nothing is mapped outside RAM (the PHB window
// is empty), so reads see all ones and writes are dropped, as a master
// abort. It hands cpuExits the exits that are the machine's own:
// KVM_EXIT_PAPR_HCALL.
type cpuExits struct {
	m       *Machine
	cpu     *CPU
	ctl     cpuControl
	modeGen uint64 // the H_SET_MODE generation applied to this vCPU
}

func newCPUExits(m *Machine, cpu *CPU, ctl cpuControl) *cpuExits {
	return &cpuExits{m: m, cpu: cpu, ctl: ctl}
}

// start prepares the vCPU for its first KVM_RUN: the boot CPU enters at
// entry with r3 = fdt; a secondary first waits for RTAS start-cpu. ok is
// false when the machine stopped before the CPU was started.
func (h *cpuExits) start(entry, fdt uint64) (ok bool, err error) {
	if h.cpu.Index != 0 {
		pc, r3, started := h.cpu.WaitStart(h.m.Done())
		if !started {
			return false, nil
		}
		entry, fdt = pc, r3
	}
	if err := h.enter(entry, fdt); err != nil {
		return false, err
	}
	return true, nil
}

// enter sets the entry registers and applies the guest's H_SET_MODE(LE)
// if this vCPU has not seen it yet (a secondary started after the boot
// CPU switched the machine to little-endian interrupts).
func (h *cpuExits) enter(pc, r3 uint64) error {
	if err := h.ctl.EnterAt(pc, r3); err != nil {
		return fmt.Errorf("vCPU %d: %w", h.cpu.Server, err)
	}
	return h.applyMode()
}

// applyMode writes LPCR[ILE] when the H_SET_MODE generation changed; gen
// 0 is the reset state (big-endian), which needs no register write.
func (h *cpuExits) applyMode() error {
	le, gen := h.m.InterruptsLittleEndian()
	if gen == h.modeGen {
		return nil
	}
	if err := h.ctl.SetInterruptsLE(le); err != nil {
		return fmt.Errorf("vCPU %d: %w", h.cpu.Server, err)
	}
	h.modeGen = gen
	return nil
}

// HandleExit implements vmm.ExitHandler.
func (h *cpuExits) HandleExit(v *vmm.VCPU, reason uint32) vmm.Stop {
	s, err := h.exit(reason, v.PaprHcall())
	if err != nil {
		return v.Fail(err)
	}
	return s
}

// exit serves one exit vmm handed over; p is kvm_run.papr_hcall in place
// (r3 in Nr, r4..r12 in Args, which KVM loads back on the next KVM_RUN; the
// result goes to Ret). A CPU that called stop-self parks here until
// start-cpu. Once the machine has stopped, the vCPU stops too.
func (h *cpuExits) exit(reason uint32, p *vmm.PaprHcall) (vmm.Stop, error) {
	if reason != vmm.ExitPaprHcall {
		return vmm.StopError, fmt.Errorf("vCPU %d: unhandled KVM exit %d", h.cpu.Server, reason)
	}
	p.Ret = uint64(h.m.Hypercall(h.cpu, p.Nr, &p.Args))
	if h.cpu.TakeStop() {
		pc, r3, ok := h.cpu.WaitStart(h.m.Done())
		if !ok {
			return h.m.stopReason(), nil
		}
		if err := h.enter(pc, r3); err != nil {
			return vmm.StopError, err
		}
	}
	select {
	case <-h.m.Done():
		return h.m.stopReason(), nil
	default:
	}
	if err := h.applyMode(); err != nil {
		return vmm.StopError, err
	}
	return vmm.StopNone, nil
}

// stopReason is how a vCPU reports the machine's stop to vmm.
func (m *Machine) stopReason() vmm.Stop {
	switch m.ExitReason() {
	case ExitPowerOff:
		return vmm.StopPowerOff
	case ExitReboot:
		return vmm.StopReset
	}
	return vmm.StopRequested
}
