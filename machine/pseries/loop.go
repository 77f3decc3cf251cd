package pseries

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
)

// vcpuDriver is what the run loop needs from one vCPU. On ppc64 hosts it is
// the KVM vCPU (kvm_ppc64x.go: KVM_RUN, the mmap'd kvm_run, KVM_SET_REGS,
// KVM_SET_ONE_REG); the tests drive the same loop with a scripted vCPU,
// since KVM for POWER cannot run on the machines the tests run on.
type vcpuDriver interface {
	// Run enters the guest until the next exit. syscall.EINTR or
	// syscall.EAGAIN means the vCPU was kicked out without an exit.
	Run() error
	ClearImmediateExit()
	ExitReason() uint32
	PAPRHcall() *kvmRunPAPRHcall // valid after a KVM_EXIT_PAPR_HCALL
	MMIO() *kvmRunMMIO           // valid after a KVM_EXIT_MMIO
	// EnterAt resets the registers: 64-bit real mode (MSR SF|ME) at pc,
	// r3 as given, the other GPRs 0.
	EnterAt(pc, r3 uint64) error
	// SetInterruptsLE sets LPCR[ILE] (interrupts taken little-endian).
	SetInterruptsLE(le bool) error
}

// loopStats counts exits the loop answered without a device.
type loopStats struct {
	mmio atomic.Uint64
}

// runVCPU runs one vCPU until the machine stops. The boot CPU enters at
// entry with r3 = fdt; a secondary first waits for RTAS start-cpu. A vCPU
// that calls stop-self parks until started again. It returns nil when the
// machine was stopped (Done closed) and an error for a KVM failure or an
// exit it cannot handle.
func (m *Machine) runVCPU(d vcpuDriver, cpu *CPU, entry, fdt uint64, st *loopStats) error {
	done := m.Done()
	if cpu.Index == 0 {
		if err := d.EnterAt(entry, fdt); err != nil {
			return err
		}
	} else if pc, r3, ok := cpu.WaitStart(done); !ok {
		return nil
	} else if err := d.EnterAt(pc, r3); err != nil {
		return err
	}
	var modeGen uint64
	for {
		select {
		case <-done:
			return nil
		default:
		}
		// Apply H_SET_MODE(LE) before entering; gen 0 is the reset
		// state (big-endian), which needs no register write.
		if le, gen := m.InterruptsLittleEndian(); gen != modeGen {
			if err := d.SetInterruptsLE(le); err != nil {
				return fmt.Errorf("vCPU %d: %w", cpu.Server, err)
			}
			modeGen = gen
		}
		if err := d.Run(); err != nil {
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) {
				d.ClearImmediateExit()
				continue // a kick: the select above decides
			}
			return fmt.Errorf("KVM_RUN on vCPU %d: %w", cpu.Server, err)
		}
		switch reason := d.ExitReason(); reason {
		case kvmExitPAPRHcall:
			h := d.PAPRHcall()
			h.Ret = uint64(m.Hypercall(cpu, h.NR, &h.Args))
			if cpu.TakeStop() {
				pc, r3, ok := cpu.WaitStart(done)
				if !ok {
					return nil
				}
				if err := d.EnterAt(pc, r3); err != nil {
					return err
				}
			}
		case kvmExitMMIO:
			// Nothing is mapped outside RAM (the PHB window is empty):
			// reads see all ones, writes are dropped, as a master abort.
			mm := d.MMIO()
			if mm.IsWrite == 0 {
				mm.Data = [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
			}
			st.mmio.Add(1)
		case kvmExitIntr:
		default:
			return fmt.Errorf("vCPU %d: unhandled KVM exit %d", cpu.Server, reason)
		}
	}
}
