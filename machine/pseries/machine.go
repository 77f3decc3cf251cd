// Package pseries is the PowerPC sPAPR ("pseries") machine: the PAPR
// hypercalls and RTAS services a guest reaches through
// KVM_EXIT_PAPR_HCALL, the XICS interrupt controller, the device tree the
// guest boots with, and the exit handler (loop.go) that vmm's vCPU loop
// calls for those exits. The KVM layer itself (ioctls, kvm_run, the vCPU
// loop and kicks) is vmm's; run_ppc64x.go, on ppc64/ppc64le hosts only,
// builds the VM through vmm's API and runs its vCPUs.
//
// Everything except run_ppc64x.go is portable and tested on every
// architecture against guest memory held in a Go byte slice. PAPR data in
// guest memory is big-endian whatever the guest's or host's byte order.
package pseries

import (
	"fmt"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// ExitReason says why the guest stopped.
type ExitReason int

const (
	ExitNone     ExitReason = iota
	ExitPowerOff            // RTAS power-off
	ExitReboot              // RTAS system-reboot
	ExitError               // a host or KVM failure
)

func (r ExitReason) String() string {
	switch r {
	case ExitPowerOff:
		return "power-off"
	case ExitReboot:
		return "reboot"
	case ExitError:
		return "error"
	}
	return "running"
}

// Options configures the portable part of a Machine.
type Options struct {
	CPUs      int       // number of vCPUs (1..maxCPUs)
	Console   io.Writer // vty output; nil discards
	NVRAMSize int       // bytes; 0 means DefaultNVRAMSize
	NVRAMPath string    // optional backing file for the NVRAM
	Log       *log.Logger
	// Now is the host clock; nil means time.Now. Tests pin it.
	Now func() time.Time
}

// maxCPUs bounds the vCPU count (and so the interrupt server numbers).
const maxCPUs = 256

// Machine holds the guest-visible state the hypercalls and RTAS act on.
// Its methods are safe for concurrent use by all vCPU goroutines.
type Machine struct {
	mem   *guestmem.Memory
	cpus  []*CPU
	vty   *VTY
	nvram *NVRAM
	ics   *ICS
	pci   *HostBridge
	now   func() time.Time
	log   *log.Logger

	irqOut    atomic.Pointer[func(server uint32, raise bool)]
	rtcOffset atomic.Int64 // nanoseconds added to host time (set-time-of-day)
	mode      modeState    // H_SET_MODE results
	mmu       mmuState     // H_REGISTER_PROC_TBL results

	exitOnce sync.Once
	exitWhy  atomic.Int32
	done     chan struct{}

	stats struct {
		unknownHcalls atomic.Uint64
		unknownRTAS   atomic.Uint64
		logged        atomic.Uint64
	}
}

// modeState records what the guest asked for with H_SET_MODE; the vCPU
// loop applies it to LPCR before each KVM_RUN when gen changes.
type modeState struct {
	gen                    atomic.Uint64
	littleEndianInterrupts atomic.Bool
}

// New builds a machine over mem.
func New(mem *guestmem.Memory, opt Options) (*Machine, error) {
	if opt.CPUs < 1 || opt.CPUs > maxCPUs {
		return nil, fmt.Errorf("pseries: %d CPUs, want 1..%d", opt.CPUs, maxCPUs)
	}
	if mem == nil || mem.Size() == 0 {
		return nil, fmt.Errorf("pseries: no guest memory")
	}
	nv, err := NewNVRAM(opt.NVRAMSize, opt.NVRAMPath)
	if err != nil {
		return nil, err
	}
	m := &Machine{
		mem:   mem,
		vty:   NewVTY(opt.Console),
		nvram: nv,
		ics:   NewICS(ICSFirstIRQ, ICSNumIRQs, opt.CPUs),
		pci:   NewHostBridge(),
		now:   opt.Now,
		log:   opt.Log,
		done:  make(chan struct{}),
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.ics.SetOutput(m.interruptLine)
	for i := 0; i < opt.CPUs; i++ {
		// Secondary CPUs start stopped; the guest starts them with the
		// RTAS start-cpu service (PAPR, QEMU's spapr_cpu_core.c).
		m.cpus = append(m.cpus, newCPU(i, i == 0))
	}
	return m, nil
}

// interruptLine is the XICS output: it wakes a CPU resting in H_CEDE and
// passes the line change to the hypervisor hook (KVM_INTERRUPT).
func (m *Machine) interruptLine(server uint32, raise bool) {
	if raise {
		if c := m.cpuByServer(uint64(server)); c != nil {
			c.signal()
		}
	}
	if f := m.irqOut.Load(); f != nil {
		(*f)(server, raise)
	}
}

// SetInterruptOutput installs the function that raises or lowers a
// server's external interrupt input. It is called with the interrupt
// controller's lock held and must not call back into the machine.
func (m *Machine) SetInterruptOutput(f func(server uint32, raise bool)) {
	m.irqOut.Store(&f)
}

// Memory returns the guest memory the machine was built over.
func (m *Machine) Memory() *guestmem.Memory { return m.mem }

// CPUs returns the vCPUs in index order.
func (m *Machine) CPUs() []*CPU { return m.cpus }

// VTY returns the hypervisor console.
func (m *Machine) VTY() *VTY { return m.vty }

// PCI returns the PCI host bridge RTAS configuration calls reach.
func (m *Machine) PCI() *HostBridge { return m.pci }

// ICS returns the interrupt source table.
func (m *Machine) ICS() *ICS { return m.ics }

// NVRAM returns the NVRAM.
func (m *Machine) NVRAM() *NVRAM { return m.nvram }

// cpuByServer finds a vCPU by interrupt server number (the device tree's
// ibm,ppc-interrupt-server#s, which RTAS and H_PROD use as the CPU id).
func (m *Machine) cpuByServer(id uint64) *CPU {
	for _, c := range m.cpus {
		if uint64(c.Server) == id {
			return c
		}
	}
	return nil
}

// RequestExit stops the machine for reason; the first request wins.
func (m *Machine) RequestExit(reason ExitReason) {
	m.exitOnce.Do(func() {
		m.exitWhy.Store(int32(reason))
		close(m.done)
	})
}

// Done is closed once the machine has been asked to stop.
func (m *Machine) Done() <-chan struct{} { return m.done }

// ExitReason says why Done was closed (ExitNone while running).
func (m *Machine) ExitReason() ExitReason { return ExitReason(m.exitWhy.Load()) }

// UnknownHcalls counts hypercalls answered with H_FUNCTION.
func (m *Machine) UnknownHcalls() uint64 { return m.stats.unknownHcalls.Load() }

// UnknownRTAS counts RTAS calls with an unknown token.
func (m *Machine) UnknownRTAS() uint64 { return m.stats.unknownRTAS.Load() }

// InterruptsLittleEndian reports the H_SET_MODE(LE) state and a generation
// number that changes whenever the guest sets it.
func (m *Machine) InterruptsLittleEndian() (le bool, gen uint64) {
	return m.mode.littleEndianInterrupts.Load(), m.mode.gen.Load()
}

// logf logs a guest-caused oddity, rate-limited to the first 100 lines so a
// guest cannot flood the host log.
func (m *Machine) logf(format string, args ...any) {
	if m.log == nil || m.stats.logged.Add(1) > 100 {
		return
	}
	m.log.Printf("pseries: "+format, args...)
}
