// Package blkdebug is QEMU's blkdebug driver for petrel img: rule-based
// I/O error injection driven by the debug events the format engines raise
// (QEMU's docs/devel/blkdebug.txt). A File sits between a format engine
// and its host file ("blkdebug:CONFIG:IMAGE", or json:{"driver": "qcow2",
// "file": {"driver": "blkdebug", ...}}); an Image sits above a whole
// image (json:{"driver": "blkdebug", "image": {"driver": "qcow2", ...}}).
//
// Semantics, as QEMU's blkdebug: the node has a state, 1 at open. When an
// event is raised, every rule for it whose state is 0 or the current state
// acts: set-state rules pick the state the node has once the event is
// done; when any inject-error rule acts, the inject-error rules that acted
// become the active set, replacing the previous one. Each request then
// fails with the errno of the first active rule whose I/O types include
// the request's and whose sector (if any) lies in the request; a "once"
// rule is deleted when it fires. Rules on the "none" event are active from
// the open on and stay so (until a "once" one fires).
package blkdebug

import (
	"strings"
	"sync"
	"syscall"

	"github.com/petrel-vmm/petrel/block"
)

// ioType is the kind of a request, as blkdebug's iotype option names it.
type ioType uint

const (
	ioRead ioType = iota
	ioWrite
	ioWriteZeroes
	ioDiscard
	ioFlush
	ioBlockStatus
)

var ioTypeNames = map[string]ioType{
	"read": ioRead, "write": ioWrite, "write-zeroes": ioWriteZeroes,
	"discard": ioDiscard, "flush": ioFlush, "block-status": ioBlockStatus,
}

// defaultIOTypes: a rule without iotype fails every kind of request but
// block status queries.
const defaultIOTypes = 1<<ioRead | 1<<ioWrite | 1<<ioWriteZeroes | 1<<ioDiscard | 1<<ioFlush

// rule is one [inject-error] or [set-state] section.
type rule struct {
	event block.DebugEvent
	state int // 0: any state

	inject      bool
	errno       syscall.Errno
	offset      int64 // byte offset (sector*512) that must lie in a request; -1 any
	once        bool
	immediately bool // accepted; Petrel's requests are synchronous anyway
	ioTypes     uint

	newState int // set-state
}

// Error is an injected failure; its text is the C library's strerror, as
// QEMU prints it ("Input/output error").
type Error struct{ Errno syscall.Errno }

func (e *Error) Error() string { return Strerror(e.Errno) }
func (e *Error) Unwrap() error { return e.Errno }

// Strerror is glibc's text for an errno: Go's, capitalized.
func Strerror(errno syscall.Errno) string {
	s := errno.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// injector holds a node's rules and state. Safe for concurrent use.
type injector struct {
	mu      sync.Mutex
	byEvent [][]*rule // per event, in the order given
	active  []*rule
	always  []*rule // the "none" event's inject-error rules
	state   int
}

func newInjector(rules []*rule) *injector {
	inj := &injector{byEvent: make([][]*rule, block.EventNone+1), state: 1}
	for _, r := range rules {
		if r.event == block.EventNone {
			if r.inject {
				inj.always = append(inj.always, r)
			}
			continue
		}
		inj.byEvent[r.event] = append(inj.byEvent[r.event], r)
	}
	return inj
}

// event runs the rules of e.
func (inj *injector) event(e block.DebugEvent) {
	if e < 0 || int(e) >= len(inj.byEvent) {
		return
	}
	inj.mu.Lock()
	defer inj.mu.Unlock()
	newState := inj.state
	var injected []*rule
	for _, r := range inj.byEvent[e] {
		if r.state != 0 && r.state != inj.state {
			continue
		}
		if r.inject {
			injected = append(injected, r)
		} else {
			newState = r.newState
		}
	}
	if injected != nil {
		inj.active = injected
	}
	inj.state = newState
}

// check fails a request of type t over [off, off+n) as the first matching
// active rule says, or returns nil.
func (inj *injector) check(off, n int64, t ioType) error {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	for _, list := range []*[]*rule{&inj.active, &inj.always} {
		for i, r := range *list {
			if r.ioTypes&(1<<t) == 0 {
				continue
			}
			if r.offset >= 0 && !(n > 0 && r.offset >= off && r.offset < off+n) {
				continue
			}
			if r.errno == 0 {
				return nil
			}
			if r.once {
				*list = append((*list)[:i:i], (*list)[i+1:]...)
				inj.remove(r)
			}
			return &Error{Errno: r.errno}
		}
	}
	return nil
}

// remove deletes a fired "once" rule from its event's list.
func (inj *injector) remove(r *rule) {
	if r.event == block.EventNone {
		return
	}
	l := inj.byEvent[r.event]
	for i, x := range l {
		if x == r {
			inj.byEvent[r.event] = append(l[:i:i], l[i+1:]...)
			return
		}
	}
}
