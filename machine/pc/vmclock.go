//go:build amd64

package pc

import (
	"sync"
	"time"
)

// vmClock is QEMU's vm_clock as a qcow2 snapshot records it
// (vm_clock_nsec): how long the guest has run, not counting pauses. It
// starts when Run starts; a loaded state sets it to the saved value.
type vmClock struct {
	mu      sync.Mutex
	base    time.Duration
	since   time.Time // zero while stopped
	running bool
}

// start lets the clock run from now (Run, Resume); it is a no-op on a
// running clock, so that a resume without a pause does not lose time.
func (c *vmClock) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		c.running, c.since = true, time.Now()
	}
}

// stop freezes the clock (Pause, the end of Run), folding the time it
// ran into base.
func (c *vmClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		c.base += time.Since(c.since)
		c.running = false
	}
}

// now is the clock in nanoseconds.
func (c *vmClock) now() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.base
	if c.running {
		d += time.Since(c.since)
	}
	return int64(d)
}

// set makes the clock read ns from now on.
func (c *vmClock) set(ns uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.base = time.Duration(ns)
	if c.running {
		c.since = time.Now()
	}
}
