//go:build amd64

package pc

import (
	"sync"
	"time"
)

// oddLog logs accesses no device claimed, at most oddBurst lines per
// second, then a count of the ones it left out (STYLE: devices never fail
// the VM; a counter and a rate-limited line record the odd access).
type oddLog struct {
	mu         sync.Mutex
	what       string
	logf       func(string, ...any)
	window     time.Time
	n          int
	suppressed int
}

// oddBurst is how many lines a second oddLog writes: enough to see a
// guest's probe, too few for a guest looping on a port to flood the log.
const oddBurst = 10

// note is a vmm.Bus OnUnhandled hook; it runs on the vCPU thread that
// made the access, so it only takes its own lock.
func (o *oddLog) note(addr uint64, size int, write bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if now.Sub(o.window) >= time.Second {
		if o.suppressed > 0 {
			o.logf("%d more unclaimed %s accesses not shown", o.suppressed, o.what)
		}
		o.window, o.n, o.suppressed = now, 0, 0
	}
	if o.n >= oddBurst {
		o.suppressed++
		return
	}
	o.n++
	dir := "read"
	if write {
		dir = "write"
	}
	o.logf("unclaimed %s %s of %d byte(s) at %#x", o.what, dir, size, addr)
}
