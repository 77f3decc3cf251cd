//go:build amd64

package pc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-vmm/petrel/devices/serial"
	"github.com/petrel-vmm/petrel/machine/devmgr"
	"github.com/petrel-vmm/petrel/vmm"
)

// lifecycle is the run of a machine's vCPUs: Run, Pause/Resume, the stops
// asked from outside (Shutdown, PowerOff, Reset), the run state QMP
// reports (Status) and the events that go with it (Emit). Machine embeds
// it, so these are the Machine's methods.
//
// Everything but Run may be called from any goroutine while Run runs: the
// run state is atomics, a stop is a vmm.VCPU.Kick, a pause the vCPU's own
// park. Run holds runMu for its whole length; nothing else takes it.
// A reset runs on Run's goroutine between two runs of the vCPUs, so it
// needs no lock against them.
type lifecycle struct {
	// vcpus are set once while the machine is built, before Run or any
	// kick can happen, and never change.
	vcpus  []*vmm.VCPU
	reboot bool // Config.Reboot: a guest reset restarts in place
	// reset is the in-place reset (powerOn.reset) Run does with reboot.
	reset func() error
	// devices: Run waits for the ejects the guest started before it
	// reports the end or resets.
	devices *devmgr.Manager
	// uart is fed from serialIn (when set) while Run runs.
	uart     *serial.UART
	serialIn io.Reader
	events   func(event string, data any) // Config.Events, may be nil
	logf     func(string, ...any)
	// stats is set with Config.Log: it logs what each run of the vCPUs
	// cost, and a stop from outside logs where each vCPU was.
	stats *runStats
	// shutdownResets: a triple fault's registers are gone (vcpuSet).
	shutdownResets bool

	runMu    sync.Mutex // one Run at a time
	paused   atomic.Bool
	started  atomic.Bool
	finished atomic.Bool
	// stopWanted is a stop asked from outside (Shutdown, PowerOff, the
	// context): a vmm.Stop, never cleared, so that one arriving while a
	// reset is in progress is not lost.
	stopWanted atomic.Int32
	// clock is the guest's running time, which snapshots record: it runs
	// while Run does and the vCPUs are not paused.
	clock vmClock
}

// Run starts the vCPUs and blocks until the guest powers off, fails, or
// ctx is cancelled / Shutdown is called. A guest reset restarts the
// machine in place with Config.Reboot and returns ExitReset without it. A
// triple fault, entry failure or internal error returns a non-nil error
// with the registers.
func (l *lifecycle) Run(ctx context.Context) (ExitReason, error) {
	if !l.runMu.TryLock() {
		return ExitError, errors.New("machine is already running")
	}
	defer l.runMu.Unlock()
	done := make(chan struct{})
	if l.serialIn != nil {
		go func() {
			if err := l.uart.Feed(l.serialIn, done); err != nil {
				l.logf("serial input: %v", err)
			}
		}()
	}
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		select {
		case <-ctx.Done():
			l.Shutdown()
		case <-done:
		}
	}()
	// Stop the watcher before returning: Close unmaps what Kick touches.
	defer func() {
		close(done)
		watcher.Wait()
	}()
	l.started.Store(true)
	defer l.finished.Store(true)
	if !l.paused.Load() {
		l.clock.start()
	}
	defer l.clock.stop()
	for {
		t0 := time.Now()
		stop, v := vmm.RunVCPUs(l.vcpus)
		// Ejects the guest made finish (device released, DEVICE_DELETED
		// sent) before Run reports the end or the machine resets.
		l.devices.WaitEjects()
		if l.stats != nil {
			l.stats.log(time.Since(t0), stop)
		}
		if stop != vmm.StopReset || !l.reboot {
			return l.exit(stop, v)
		}
		l.Emit("RESET", map[string]any{"guest": true, "reason": "guest-reset"})
		if err := l.reset(); err != nil {
			return ExitError, fmt.Errorf("resetting the machine: %w", err)
		}
		// A stop asked while the vCPUs were stopped for the reset would
		// otherwise be lost with the reset's own stop.
		if s := vmm.Stop(l.stopWanted.Load()); s != vmm.StopNone {
			return l.exit(s, l.vcpus[0])
		}
	}
}

// runStats logs a run's exits and resident memory (Config.Log).
type runStats struct {
	vcpus     []*vmm.VCPU
	pio, mmio *vmm.Bus
	ram       *guestRAM
	logf      func(string, ...any)
}

// log logs how a run of d that ended with stop went.
func (r *runStats) log(d time.Duration, stop vmm.Stop) {
	r.logf("guest ran %v: %s", d.Round(time.Microsecond), stop)
	var exits, ioExits, mmioExits uint64
	for _, v := range r.vcpus {
		exits += v.Exits.Load()
		ioExits += v.IOExits.Load()
		mmioExits += v.MMIOExits.Load()
	}
	r.logf("exits: %d (io %d, mmio %d); accesses no device claimed: %d pio, %d mmio",
		exits, ioExits, mmioExits, r.pio.Unhandled.Load(), r.mmio.Unhandled.Load())
	if vmmRSS, guestRSS, err := r.ram.resident(); err == nil {
		// RssAnon counts the guest's RAM too; what is left of the VMM's
		// share is its heap and stacks, the rest its binary's pages
		// (file-backed, or shmem when it runs from an initramfs).
		anon, _ := procStatus("RssAnon")
		r.logf("resident memory: VMM %d KiB beyond guest RAM (%d KiB of it heap and stacks), guest RAM touched %d KiB",
			vmmRSS>>10, (max(anon, guestRSS)-guestRSS)>>10, guestRSS>>10)
	}
}

// exit turns the stop that ended the run into Run's result, emitting the
// QMP event that goes with it (QEMU's SHUTDOWN reasons: guest-shutdown,
// guest-reset, guest-panic).
func (l *lifecycle) exit(stop vmm.Stop, v *vmm.VCPU) (ExitReason, error) {
	l.finished.Store(true) // before the event: a client reading it sees "shutdown"
	switch stop {
	case vmm.StopPowerOff:
		l.Emit("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"})
	case vmm.StopReset:
		l.Emit("RESET", map[string]any{"guest": true, "reason": "guest-reset"})
	case vmm.StopTripleFault, vmm.StopCrash:
		l.Emit("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-panic"})
	}
	switch stop {
	case vmm.StopPowerOff:
		return ExitPowerOff, nil
	case vmm.StopReset:
		return ExitReset, nil
	case vmm.StopRequested:
		if l.stats != nil {
			for _, v := range l.vcpus {
				l.logf("vcpu %d stopped at:\n%s", v.ID, v.DumpRegs())
			}
		}
		return ExitStopped, nil
	case vmm.StopTripleFault:
		return ExitTripleFault, tripleFault(v.ID, l.shutdownResets, v.DumpRegs)
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

// kickAll stops every vCPU with reason s; the first stop of a run is the
// one RunVCPUs reports.
func (l *lifecycle) kickAll(s vmm.Stop) {
	for _, v := range l.vcpus {
		v.Kick(s)
	}
}

// Shutdown stops a running machine (Run returns ExitStopped).
func (l *lifecycle) Shutdown() { l.stop(vmm.StopRequested) }

// PowerOff makes Run return ExitPowerOff, as an ACPI S5 would.
func (l *lifecycle) PowerOff() { l.stop(vmm.StopPowerOff) }

// stop records an outside stop (kept across a reset in progress) and
// kicks the vCPUs with it.
func (l *lifecycle) stop(s vmm.Stop) {
	l.stopWanted.CompareAndSwap(int32(vmm.StopNone), int32(s))
	l.kickAll(s)
}

// Reset asks for a guest reset: with Config.Reboot the machine restarts in
// place, otherwise Run returns ExitReset.
func (l *lifecycle) Reset() { l.kickAll(vmm.StopReset) }

// Pause parks every vCPU outside the guest (QMP stop); Resume undoes it.
// When Pause returns no vCPU is in KVM_RUN, and the guest's clock stands.
func (l *lifecycle) Pause() {
	for _, v := range l.vcpus {
		v.Pause()
	}
	l.paused.Store(true)
	l.clock.stop()
}

// Resume lets paused vCPUs run again (QMP cont).
func (l *lifecycle) Resume() {
	l.paused.Store(false)
	// Before Run (-loadvm) and after it the clock stays stopped: it
	// counts only time the guest could run.
	if l.started.Load() && !l.finished.Load() {
		l.clock.start()
	}
	for _, v := range l.vcpus {
		v.Resume()
	}
}

// Status is the run state with QEMU's names: "prelaunch" before Run,
// "running", "paused", and "shutdown" once Run has returned.
func (l *lifecycle) Status() string {
	switch {
	case l.finished.Load():
		return "shutdown"
	case l.paused.Load():
		return "paused"
	case !l.started.Load():
		return "prelaunch"
	}
	return "running"
}

// Emit sends a QMP event (SHUTDOWN, RESET, STOP, RESUME, POWERDOWN,
// DEVICE_DELETED) to Config.Events.
func (l *lifecycle) Emit(event string, data any) {
	if l.events != nil {
		l.events(event, data)
	}
}
