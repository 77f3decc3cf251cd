//go:build amd64

package pc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/petrel-vmm/petrel/vmm"
)

// Run starts the vCPUs and blocks until the guest powers off, fails, or
// ctx is cancelled / Shutdown is called. A guest reset restarts the
// machine in place with Config.Reboot and returns ExitReset without it. A
// triple fault, entry failure or internal error returns a non-nil error
// with the registers.
func (m *Machine) Run(ctx context.Context) (ExitReason, error) {
	if !m.state.runMu.TryLock() {
		return ExitError, errors.New("machine is already running")
	}
	defer m.state.runMu.Unlock()
	done := make(chan struct{})
	if m.cfg.SerialIn != nil {
		go func() {
			if err := m.board.uart.Feed(m.cfg.SerialIn, done); err != nil {
				m.logf("serial input: %v", err)
			}
		}()
	}
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		select {
		case <-ctx.Done():
			m.Shutdown()
		case <-done:
		}
	}()
	// Stop the watcher before returning: Close unmaps what Kick touches.
	defer func() {
		close(done)
		watcher.Wait()
	}()
	m.state.started.Store(true)
	defer m.state.finished.Store(true)
	if !m.state.paused.Load() {
		m.clock.start()
	}
	defer m.clock.stop()
	for {
		t0 := time.Now()
		stop, v := vmm.RunVCPUs(m.vcpus)
		// Ejects the guest made finish (device released, DEVICE_DELETED
		// sent) before Run reports the end or the machine resets.
		m.devices.WaitEjects()
		m.logRun(time.Since(t0), stop)
		if stop != vmm.StopReset || !m.cfg.Reboot {
			return m.exit(stop, v)
		}
		m.Emit("RESET", map[string]any{"guest": true, "reason": "guest-reset"})
		if err := m.resetInPlace(); err != nil {
			return ExitError, fmt.Errorf("resetting the machine: %w", err)
		}
		// A stop asked while the vCPUs were stopped for the reset would
		// otherwise be lost with the reset's own stop.
		if s := vmm.Stop(m.state.stopWanted.Load()); s != vmm.StopNone {
			return m.exit(s, m.vcpus[0])
		}
	}
}

// logRun logs how a run of the vCPUs went (with Config.Log).
func (m *Machine) logRun(d time.Duration, stop vmm.Stop) {
	if m.cfg.Log == nil {
		return
	}
	m.logf("guest ran %v: %s", d.Round(time.Microsecond), stop)
	var exits, ioExits, mmioExits uint64
	for _, v := range m.vcpus {
		exits += v.Exits.Load()
		ioExits += v.IOExits.Load()
		mmioExits += v.MMIOExits.Load()
	}
	m.logf("exits: %d (io %d, mmio %d); accesses no device claimed: %d pio, %d mmio",
		exits, ioExits, mmioExits, m.pio.Unhandled.Load(), m.mmio.Unhandled.Load())
	if vmmRSS, guestRSS, err := m.ResidentMemory(); err == nil {
		m.logf("resident memory: VMM %d KiB beyond guest RAM, guest RAM touched %d KiB", vmmRSS>>10, guestRSS>>10)
	}
}

// exit turns the stop that ended the run into Run's result, emitting the
// QMP event that goes with it.
func (m *Machine) exit(stop vmm.Stop, v *vmm.VCPU) (ExitReason, error) {
	m.state.finished.Store(true) // before the event: a client reading it sees "shutdown"
	switch stop {
	case vmm.StopPowerOff:
		m.Emit("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"})
	case vmm.StopReset:
		m.Emit("RESET", map[string]any{"guest": true, "reason": "guest-reset"})
	case vmm.StopTripleFault, vmm.StopCrash:
		m.Emit("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-panic"})
	}
	switch stop {
	case vmm.StopPowerOff:
		return ExitPowerOff, nil
	case vmm.StopReset:
		return ExitReset, nil
	case vmm.StopRequested:
		if m.cfg.Log != nil {
			for _, v := range m.vcpus {
				m.logf("vcpu %d stopped at:\n%s", v.ID, v.DumpRegs())
			}
		}
		return ExitStopped, nil
	case vmm.StopTripleFault:
		return ExitTripleFault, tripleFault(v.ID, m.shutdownResets, v.DumpRegs)
	case vmm.StopCrash:
		return ExitCrash, fmt.Errorf("vcpu %d: guest reported a crash\n%s", v.ID, v.DumpRegs())
	case vmm.StopHalted:
		return ExitError, fmt.Errorf("vcpu %d: halted with interrupts unable to wake it\n%s", v.ID, v.DumpRegs())
	}
	return ExitError, fmt.Errorf("%w\n%s", v.Err(), v.DumpRegs())
}

// tripleFault is the error for vCPU id's KVM_EXIT_SHUTDOWN, with its
// registers (dump) only where they are the faulting state: KVM on AMD has
// reset the vCPU by then, and a reset state shown as the fault's misleads.
func tripleFault(id int, resets bool, dump func() string) error {
	if resets {
		return fmt.Errorf("vcpu %d: triple fault (KVM_EXIT_SHUTDOWN); its registers at the fault are not "+
			"available: KVM on AMD resets the vCPU when it intercepts the shutdown", id)
	}
	return fmt.Errorf("vcpu %d: triple fault (KVM_EXIT_SHUTDOWN)\n%s", id, dump())
}

// kickAll stops every vCPU with reason s.
func (m *Machine) kickAll(s vmm.Stop) {
	for _, v := range m.vcpus {
		v.Kick(s)
	}
}

// Shutdown stops a running machine (Run returns ExitStopped).
func (m *Machine) Shutdown() { m.stop(vmm.StopRequested) }

// PowerOff makes Run return ExitPowerOff, as an ACPI S5 would.
func (m *Machine) PowerOff() { m.stop(vmm.StopPowerOff) }

// stop records an outside stop (kept across a reset in progress) and
// kicks the vCPUs with it.
func (m *Machine) stop(s vmm.Stop) {
	m.state.stopWanted.CompareAndSwap(int32(vmm.StopNone), int32(s))
	m.kickAll(s)
}

// Reset asks for a guest reset: with Config.Reboot the machine restarts in
// place, otherwise Run returns ExitReset.
func (m *Machine) Reset() { m.kickAll(vmm.StopReset) }
