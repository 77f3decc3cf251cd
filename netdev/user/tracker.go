package user

import (
	"io"
	"sync"
)

// tracker counts the goroutines serving NAT flows and forwarded
// connections and holds the sockets that end them, so that Close can end
// every one and wait for it.
//
// Invariant: once shutdown has begun, enter fails and add closes what it
// is given, so nothing started after it outlives it.
type tracker struct {
	mu      sync.Mutex
	closed  bool
	sockets map[io.Closer]struct{}
	wg      sync.WaitGroup
}

// enter counts one goroutine in; false after shutdown.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// exit counts out a goroutine that entered.
func (t *tracker) exit() { t.wg.Done() }

// spawn runs fn on a counted goroutine; false (fn not run) after shutdown.
func (t *tracker) spawn(fn func()) bool {
	if !t.enter() {
		return false
	}
	go func() {
		defer t.exit()
		fn()
	}()
	return true
}

// add registers sockets for shutdown to close; after shutdown it closes
// them at once and returns false.
func (t *tracker) add(cs ...io.Closer) bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	if t.sockets == nil {
		t.sockets = map[io.Closer]struct{}{}
	}
	for _, c := range cs {
		t.sockets[c] = struct{}{}
	}
	t.mu.Unlock()
	return true
}

// remove forgets sockets their flow has closed.
func (t *tracker) remove(cs ...io.Closer) {
	t.mu.Lock()
	for _, c := range cs {
		delete(t.sockets, c)
	}
	t.mu.Unlock()
}

// shutdown closes every registered socket and waits for every counted
// goroutine.
func (t *tracker) shutdown() {
	t.mu.Lock()
	t.closed = true
	sockets := t.sockets
	t.sockets = nil
	t.mu.Unlock()
	for c := range sockets {
		c.Close()
	}
	t.wg.Wait()
}
