package vmm

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// KVM exit reasons (KVM_EXIT_*).
const (
	ExitUnknown       = 0
	ExitException     = 1
	ExitIO            = 2
	ExitHypercall     = 3
	ExitDebug         = 4
	ExitHLT           = 5
	ExitMMIO          = 6
	ExitIRQWindowOpen = 7
	ExitShutdown      = 8
	ExitFailEntry     = 9
	ExitIntr          = 10
	ExitInternalError = 17
	ExitPaprHcall     = 19
	ExitSystemEvent   = 24
)

// System event types (KVM_SYSTEM_EVENT_*).
const (
	systemEventShutdown = 1
	systemEventReset    = 2
	systemEventCrash    = 3
)

// Stop says why a vCPU loop ended.
type Stop int

const (
	// StopNone: keep running.
	StopNone Stop = iota
	// StopPowerOff: the guest powered off (ACPI S5, KVM shutdown event).
	StopPowerOff
	// StopReset: the guest asked for a reset (i8042, KVM reset event).
	StopReset
	// StopTripleFault: the vCPU hit KVM_EXIT_SHUTDOWN (triple fault).
	StopTripleFault
	// StopCrash: the guest reported a crash (KVM_SYSTEM_EVENT_CRASH).
	StopCrash
	// StopHalted: a vCPU halted with no in-kernel irqchip to wake it.
	StopHalted
	// StopRequested: the VMM asked the vCPU to stop (Kick).
	StopRequested
	// StopError: a KVM or host failure; see the returned error.
	StopError
)

var stopNames = [...]string{"running", "power-off", "reset", "triple fault", "guest crash", "halted", "stopped", "error"}

func (s Stop) String() string {
	if int(s) < len(stopNames) {
		return stopNames[s]
	}
	return fmt.Sprintf("stop(%d)", int(s))
}

// ExitHandler handles the exits that belong to a machine, not to a bus:
// PAPR_HCALL on pseries, HLT without an irqchip on x86. vmm serves PIO and
// MMIO from the VCPU's buses itself and maps SHUTDOWN and SYSTEM_EVENT to
// a Stop. It must not allocate or lock on its hot path. It returns StopNone
// to resume the guest.
type ExitHandler interface {
	HandleExit(v *VCPU, reason uint32) Stop
}

// VCPU is one virtual CPU. Run it from a single goroutine.
type VCPU struct {
	ID  int
	fd  int
	vm  *VM
	run runView

	// PIO and MMIO are the buses port I/O and MMIO exits dispatch to
	// (shared by all vCPUs). A nil bus reads as all ones and drops writes.
	PIO, MMIO *Bus
	// Handler takes the machine's exits.
	Handler ExitHandler

	tid       atomic.Int32
	pauseMu   sync.Mutex // guards pauseWant, parked, running, closed, cond
	cond      *sync.Cond
	pauseWant bool
	pauseReq  atomic.Bool // pauseWant, readable without the lock
	parked    bool
	running   bool
	closed    bool
	stopReq   atomic.Int32 // a Stop value requested from outside
	lastErr   error        // set before returning StopError
	Exits     atomic.Uint64
	IOExits   atomic.Uint64
	MMIOExits atomic.Uint64
}

// CreateVCPU creates vCPU id and maps its kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctlRetry(vm.fd, ioctlCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("creating vcpu %d: %w", id, err)
	}
	mem, err := unix.Mmap(int(fd), 0, vm.kvm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mapping kvm_run of vcpu %d: %w", id, err)
	}
	return &VCPU{ID: id, fd: int(fd), vm: vm, run: runView{mem}}, nil
}

// Close unmaps kvm_run and closes the vCPU fd.
func (v *VCPU) Close() error {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	unix.Munmap(v.run.mem)
	err := unix.Close(v.fd)
	v.fd = -1
	return err
}

// Kick asks the vCPU to leave KVM_RUN and stop with reason s. It is safe
// from any goroutine: immediate_exit covers a vCPU about to enter the guest,
// and a signal to its thread interrupts one inside it (KVM_RUN returns
// EINTR). SIGURG is used because the Go runtime already tolerates it.
func (v *VCPU) Kick(s Stop) {
	v.stopReq.CompareAndSwap(int32(StopNone), int32(s))
	v.pauseMu.Lock()
	v.interrupt()
	v.pauseCond().Broadcast() // a parked vCPU must see the stop
	v.pauseMu.Unlock()
}

// interrupt forces the vCPU out of KVM_RUN. Called with pauseMu held, which
// Close also takes, so kvm_run is never touched after it is unmapped.
func (v *VCPU) interrupt() {
	if v.closed {
		return
	}
	v.run.setImmediateExit(true)
	if tid := v.tid.Load(); tid != 0 {
		unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}

func (v *VCPU) pauseCond() *sync.Cond {
	if v.cond == nil {
		v.cond = sync.NewCond(&v.pauseMu)
	}
	return v.cond
}

// Pause makes the vCPU leave the guest and wait until Resume; it returns
// once the vCPU is parked (or not running at all).
func (v *VCPU) Pause() {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	v.pauseWant = true
	v.pauseReq.Store(true)
	v.interrupt()
	for !v.parked && v.running && Stop(v.stopReq.Load()) == StopNone {
		v.pauseCond().Wait()
	}
}

// Resume lets a paused vCPU re-enter the guest.
func (v *VCPU) Resume() {
	v.pauseMu.Lock()
	v.pauseWant = false
	v.pauseReq.Store(false)
	v.pauseCond().Broadcast()
	v.pauseMu.Unlock()
}

// park blocks the vCPU goroutine while a pause is requested.
func (v *VCPU) park() {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	c := v.pauseCond()
	v.parked = true
	c.Broadcast()
	for v.pauseWant && Stop(v.stopReq.Load()) == StopNone {
		c.Wait()
	}
	v.parked = false
}

func (v *VCPU) setRunning(r bool) {
	v.pauseMu.Lock()
	v.running = r
	v.pauseCond().Broadcast()
	v.pauseMu.Unlock()
}

// Err is the error behind the last StopError.
func (v *VCPU) Err() error { return v.lastErr }

// Run enters the guest until an exit stops it. It locks the goroutine to
// its OS thread for the duration.
func (v *VCPU) Run() Stop {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	v.setRunning(true)
	defer v.setRunning(false)
	// Kick protocol: a kicker publishes its request (stopReq, pauseReq)
	// and then sets immediate_exit and signals the thread. This loop clears
	// immediate_exit only after KVM_RUN returned EINTR, and then re-reads
	// the requests before entering again. Both sides use sync/atomic, which
	// is sequentially consistent on every architecture (on POWER the stores
	// carry sync/lwsync barriers, not just x86's locked instructions), so a
	// request published after the loop read the flags has its
	// immediate_exit store land after the clear: KVM_RUN returns at once
	// and no kick is lost.
	//
	// exitPending: the last KVM_RUN ended in an exit served here (IO, MMIO,
	// a machine's hypercall), which KVM completes only on the next KVM_RUN
	// (completeExit).
	exitPending := false
	for {
		if s := Stop(v.stopReq.Load()); s != StopNone {
			v.completeExit(&exitPending)
			return s
		}
		if v.pauseReq.Load() {
			v.completeExit(&exitPending)
			v.park()
			continue
		}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(v.fd), ioctlRun, 0)
		exitPending = false
		if e != 0 {
			if e == unix.EINTR || e == unix.EAGAIN {
				// A kick, or a Go runtime signal: the checks above decide.
				v.run.setImmediateExit(false)
				continue
			}
			v.lastErr = fmt.Errorf("vcpu %d: KVM_RUN: %w", v.ID, e)
			return StopError
		}
		if s := v.dispatch(); s != StopNone {
			return s
		}
		exitPending = true
	}
}

// completeExit finishes an exit served in user space before the vCPU
// stops or parks: KVM stores an IN's or MMIO read's data and moves RIP
// past the instruction (or, on POWER, returns a hypercall's result) only
// on the next KVM_RUN, and that state is not visible to user space. With
// immediate_exit set, KVM_RUN completes it and returns EINTR without
// running the guest (Documentation/virt/kvm/api.rst, KVM_RUN), so state
// read while the vCPU is paused (savevm) is the state after the
// instruction, which a restored vCPU does not execute again. A string
// instruction may exit once more for its next chunk: that exit is served
// and completed too.
func (v *VCPU) completeExit(pending *bool) {
	for *pending {
		v.run.setImmediateExit(true)
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(v.fd), ioctlRun, 0)
		if e != 0 {
			// EINTR: done. Another error is left for the next KVM_RUN,
			// which reports it.
			*pending = false
			return
		}
		v.dispatch() // an IO or MMIO exit: served, never a stop
	}
}

// dispatch handles one exit in place. It neither allocates nor locks on
// the IO/MMIO paths (TestDispatchAllocs).
func (v *VCPU) dispatch() Stop {
	v.Exits.Add(1)
	h := v.run.header()
	switch h.ExitReason {
	case ExitIO:
		v.IOExits.Add(1)
		v.handleIO()
		return StopNone
	case ExitMMIO:
		v.MMIOExits.Add(1)
		m := v.run.mmio()
		n := m.Len
		if n > 8 {
			n = 8
		}
		if v.MMIO == nil {
			if m.IsWrite == 0 {
				for i := range m.Data {
					m.Data[i] = 0xff
				}
			}
			return StopNone
		}
		if m.IsWrite != 0 {
			v.MMIO.Write(m.PhysAddr, m.Data[:n])
		} else {
			v.MMIO.Read(m.PhysAddr, m.Data[:n])
		}
		return StopNone
	case ExitIntr:
		return Stop(v.stopReq.Load())
	case ExitShutdown:
		return StopTripleFault
	case ExitSystemEvent:
		switch v.run.systemEvent().Type {
		case systemEventShutdown:
			return StopPowerOff
		case systemEventReset:
			return StopReset
		default:
			return StopCrash
		}
	case ExitFailEntry:
		f := v.run.failEntry()
		v.lastErr = fmt.Errorf("vcpu %d: entry failed: hardware reason %#x on cpu %d",
			v.ID, f.HardwareEntryFailureReason, f.CPU)
		return StopError
	case ExitInternalError:
		in := v.run.internal()
		n := in.Ndata
		if n > 16 {
			n = 16
		}
		v.lastErr = fmt.Errorf("vcpu %d: kvm internal error: suberror %d, data %#x",
			v.ID, in.Suberror, in.Data[:n])
		return StopError
	}
	if v.Handler != nil {
		return v.Handler.HandleExit(v, h.ExitReason)
	}
	v.lastErr = fmt.Errorf("vcpu %d: unhandled exit reason %d", v.ID, h.ExitReason)
	return StopError
}

// Fail records an error for a machine handler that returns StopError.
func (v *VCPU) Fail(err error) Stop {
	v.lastErr = err
	return StopError
}

// handleIO serves the pending KVM_EXIT_IO from the PIO bus, walking
// string instructions (count > 1) one element at a time. A data offset
// outside kvm_run (a kernel bug) is counted as unhandled and dropped.
func (v *VCPU) handleIO() {
	io := v.run.io()
	size, count := int(io.Size), int(io.Count)
	end := io.DataOffset + uint64(size*count)
	if size == 0 || end > uint64(len(v.run.mem)) || io.DataOffset > end {
		if v.PIO != nil {
			v.PIO.Unhandled.Add(1)
		}
		return
	}
	data := v.run.mem[io.DataOffset:end]
	out, port := io.Direction == 1, uint64(io.Port)
	if v.PIO == nil {
		if !out {
			for i := range data {
				data[i] = 0xff
			}
		}
		return
	}
	for i := 0; i < count; i++ {
		d := data[i*size : (i+1)*size]
		if out {
			v.PIO.Write(port, d)
		} else {
			v.PIO.Read(port, d)
		}
	}
}

// PaprHcall returns the pending KVM_EXIT_PAPR_HCALL in place.
func (v *VCPU) PaprHcall() *PaprHcall { return v.run.papr() }
