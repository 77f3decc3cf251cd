//go:build amd64

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/qmp"
)

// qmpFront serves QMP for `petrel run`: startQMP listens (so that a bad
// -qmp fails before the machine is built), serve starts answering for the
// machine. A guest reboot resets the machine in place, so one machine is
// served for the whole run.
type qmpFront struct {
	// srv is nil until serve; an atomic pointer because emit is called by
	// the machine's goroutines (vCPUs, devices) while main calls serve.
	srv atomic.Pointer[qmp.Server]
	// spec is -qmp as given; "" means no monitor, and every method is then
	// a no-op.
	spec string
	// quit cancels the run when the stdio monitor reaches EOF (the QMP
	// quit command reaches the same cancel through pcqmp.New).
	quit func()
	// ln is the unix socket listener; nil for "" and "stdio".
	ln net.Listener
	// wait is true unless wait=off/nowait: runMain does not start the
	// guest before a first client has connected, as QEMU does.
	wait bool
	// first is closed (once, through once) when the first client connects.
	first chan struct{}
	once  sync.Once // closes first exactly once, however many clients come
	// closed is closed by Close; it releases waitClient.
	closed chan struct{}
}

// startQMP parses -qmp and starts listening. quit is called when a -qmp
// stdio monitor reaches EOF, as QEMU exits then.
func startQMP(spec string, quit func()) (*qmpFront, error) {
	q := &qmpFront{spec: spec, quit: quit, first: make(chan struct{}), closed: make(chan struct{})}
	if spec == "" || spec == "stdio" {
		return q, nil
	}
	parts := strings.Split(spec, ",")
	if !strings.HasPrefix(parts[0], "unix:") || len(parts[0]) == 5 {
		return nil, fmt.Errorf("-qmp %q: want unix:PATH,server[,wait=off] or stdio", spec)
	}
	path := parts[0][5:]
	server := false
	q.wait = true
	for _, p := range parts[1:] {
		switch p {
		case "server", "server=on":
			server = true
		case "wait=off", "nowait":
			q.wait = false
		case "wait=on":
			q.wait = true
		default:
			return nil, fmt.Errorf("-qmp %q: unknown option %q", spec, p)
		}
	}
	if !server {
		return nil, fmt.Errorf("-qmp %q: only server sockets are supported (add ,server)", spec)
	}
	ln, err := qmp.ListenSocket(path) // mode 0600
	if err != nil {
		return nil, fmt.Errorf("-qmp: %w", err)
	}
	q.ln = ln
	return q, nil
}

// serve starts answering QMP for m.
func (q *qmpFront) serve(m qmp.Machine) {
	if q.spec == "" {
		return
	}
	srv := qmp.NewServer(m)
	q.srv.Store(srv)
	if q.spec == "stdio" {
		go func() {
			srv.ServeConn(stdio{})
			q.quit() // QEMU exits when the stdio monitor closes
		}()
		return
	}
	go q.accept(srv)
}

// accept serves each client on its own goroutine until the listener is
// closed; QEMU likewise takes more than one QMP client on a socket.
func (q *qmpFront) accept(srv *qmp.Server) {
	for {
		c, err := q.ln.Accept()
		if err != nil {
			return
		}
		q.once.Do(func() { close(q.first) })
		go srv.ServeConn(c)
	}
}

// waitClient blocks until the first QMP client connects when -qmp asked
// to wait (QEMU's default for server sockets).
func (q *qmpFront) waitClient() error {
	if q.ln == nil || !q.wait {
		return nil
	}
	fmt.Fprintf(os.Stderr, "petrel: waiting for a QMP connection on %s\n", q.ln.Addr())
	select {
	case <-q.first:
		return nil
	case <-q.closed:
		return errors.New("qmp closed before a client connected")
	}
}

// emit sends a machine event to the QMP clients (none before serve).
func (q *qmpFront) emit(event string, data any) {
	if srv := q.srv.Load(); srv != nil {
		srv.Emit(event, data)
	}
}

// Close stops listening, removes the socket and closes the server's
// connections. It is called from main only (it is not safe to call
// concurrently with itself) and is idempotent.
func (q *qmpFront) Close() {
	select {
	case <-q.closed:
		return
	default:
		close(q.closed)
	}
	if q.ln != nil {
		q.ln.Close()
	}
	if srv := q.srv.Load(); srv != nil {
		srv.Close()
	}
}

// stdio is os.Stdin+os.Stdout as one connection.
type stdio struct{}

// Read and Write make stdio an io.ReadWriter, which ServeConn needs.
func (stdio) Read(p []byte) (int, error) { return os.Stdin.Read(p) }

// Write sends a QMP message to stdout; ServeConn writes each message with
// one call under its connection lock, so messages never interleave.
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
