package pseries

import (
	"sync"
	"time"
)

// CPU is the hypervisor's view of one vCPU: whether it runs (RTAS
// start-cpu / stop-self / query-cpu-stopped-state) and whether it has been
// prodded (H_PROD / H_CEDE). One thread per core, so the interrupt server
// number equals the index.
type CPU struct {
	Index  int
	Server uint32

	mu           sync.Mutex // guards the fields below
	running      bool
	startPending bool   // start-cpu accepted, not yet taken by the vCPU loop
	startPC      uint64 // entry point given to start-cpu
	startR3      uint64
	stopPending  bool // stop-self called; the vCPU loop must park
	prodPending  bool

	wake chan struct{} // capacity 1: start-cpu or H_PROD happened

	rtas      rtasCall    // scratch for the RTAS call this CPU is making
	cedeTimer *time.Timer // bounds H_CEDE; used only by the CPU's own goroutine
}

func newCPU(index int, running bool) *CPU {
	return &CPU{Index: index, Server: uint32(index), running: running, wake: make(chan struct{}, 1)}
}

func (c *CPU) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Running reports whether the CPU is started (not stopped by stop-self and
// not a secondary still waiting for start-cpu).
func (c *CPU) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// start is RTAS start-cpu: false if the CPU already runs.
func (c *CPU) start(pc, r3 uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return false
	}
	c.running, c.startPending = true, true
	c.startPC, c.startR3 = pc, r3
	c.signal()
	return true
}

// stopSelf is RTAS stop-self, called on the CPU itself.
func (c *CPU) stopSelf() {
	c.mu.Lock()
	c.running, c.stopPending = false, true
	c.mu.Unlock()
}

// TakeStop reports (once) that the CPU called stop-self; the vCPU loop
// then parks in WaitStart instead of re-entering the guest.
func (c *CPU) TakeStop() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stopPending
	c.stopPending = false
	return s
}

// WaitStart blocks a stopped CPU until another CPU starts it with
// start-cpu, and returns the entry point and r3 it gave. ok is false when
// done was closed first.
func (c *CPU) WaitStart(done <-chan struct{}) (pc, r3 uint64, ok bool) {
	for {
		c.mu.Lock()
		if c.startPending {
			c.startPending = false
			pc, r3 = c.startPC, c.startR3
			c.mu.Unlock()
			return pc, r3, true
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-done:
			return 0, 0, false
		}
	}
}

// prod is H_PROD's effect on the target.
func (c *CPU) prod() {
	c.mu.Lock()
	c.prodPending = true
	c.mu.Unlock()
	c.signal()
}

// cedeMax bounds how long an H_CEDE that reached user space waits for an
// H_PROD: timer (decrementer) interrupts are raised inside KVM, which
// cannot see this wait, so the CPU goes back to the guest at least this
// often to take them.
const cedeMax = time.Millisecond

// cede is H_CEDE: it returns at once if a prod is pending, else waits for
// one (or done, or cedeMax).
func (c *CPU) cede(done <-chan struct{}) {
	c.mu.Lock()
	if c.prodPending {
		c.prodPending = false
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	// One timer per CPU, reset per cede, so H_CEDE does not allocate.
	// (Since Go 1.23 Reset leaves no stale tick in the channel.)
	if c.cedeTimer == nil {
		c.cedeTimer = time.NewTimer(cedeMax)
	} else {
		c.cedeTimer.Reset(cedeMax)
	}
	select {
	case <-c.wake:
	case <-done:
	case <-c.cedeTimer.C:
	}
	c.cedeTimer.Stop()
	c.mu.Lock()
	c.prodPending = false
	c.mu.Unlock()
}
