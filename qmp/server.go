// Package qmp is Petrel's QEMU Machine Protocol server: the greeting,
// capabilities negotiation, commands and asynchronous events as QEMU speaks
// them, so existing QMP clients drive Petrel.
//
// The server owns the protocol; what commands do is the Machine's. The
// machine reports the events it causes (STOP, RESUME, POWERDOWN, SHUTDOWN by
// the guest, DEVICE_DELETED after the guest ejects) through Server.Emit, since
// only it knows whether its state really changed; the server itself emits
// only the SHUTDOWN of a `quit`.
package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Version is what the greeting reports (the QEMU release whose QMP
// behaviour Petrel follows).
var Version = struct{ Major, Minor, Micro int }{7, 2, 0}

// Server serves QMP connections for one machine.
type Server struct {
	// m is the machine every command acts on.
	m Machine

	// Locks: mu and a conn's wmu are never held together (Emit and Close
	// copy the connections out first), so a client that does not read
	// cannot stall the others' bookkeeping. jobs.mu is taken before mu and
	// wmu (a transition emits under it); snap before all of them (the
	// machine emits STOP and RESUME inside a snapshot operation).
	mu sync.Mutex // guards conns and lns
	// conns are the live connections, each added by ServeConn and removed
	// when it returns.
	conns map[*conn]struct{}
	// lns are the listeners of ListenUnix, closed by Close.
	lns []net.Listener

	// jobs are the snapshot jobs not yet dismissed.
	jobs jobTable
	// snap serialises the machine's snapshot operations (jobs and HMP),
	// which QEMU runs one at a time in its main loop.
	snap sync.Mutex
}

// NewServer returns a server for m.
func NewServer(m Machine) *Server {
	s := &Server{m: m, conns: map[*conn]struct{}{}}
	s.jobs.emit = s.Emit
	return s
}

// ListenUnix creates a UNIX socket at path, mode 0600, and serves it in the
// background. A stale socket at path is replaced; any other file is not.
func (s *Server) ListenUnix(path string) error {
	ln, err := ListenSocket(path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	go s.acceptLoop(ln)
	return nil
}

// ListenSocket creates a listening UNIX socket at path with mode 0600,
// without touching the process umask: it binds under a temporary name,
// restricts it, then renames it into place, so the socket is never
// reachable with looser permissions. A stale socket at path is replaced;
// any other file is not. Closing the listener removes the socket.
func ListenSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("qmp socket %s: file exists and is not a socket", path)
		}
		os.Remove(path)
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d.tmp", filepath.Base(path), os.Getpid()))
	os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	return &unlinkListener{ln, path}, nil
}

// unlinkListener removes the socket file at path when closed. net's own
// unlink-on-close is off because it would remove the temporary name the
// socket was bound under, not path.
type unlinkListener struct {
	net.Listener
	path string
}

// Close closes the listener and removes the socket file.
func (u *unlinkListener) Close() error {
	err := u.Listener.Close()
	os.Remove(u.path)
	return err
}

// acceptLoop serves each client of ln on its own goroutine until ln is
// closed. Other accept errors (EMFILE, a connection reset before accept)
// are transient: it waits 10ms and retries rather than spin or give up.
func (s *Server) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.ServeConn(c)
	}
}

// Close stops listening and disconnects every client.
func (s *Server) Close() error {
	s.mu.Lock()
	lns := s.lns
	s.lns = nil
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range conns {
		c.close()
	}
	return nil
}

// conn is one client. Writes are serialised by wmu because events arrive
// from other goroutines.
type conn struct {
	// rw is the connection; it is closed (if an io.Closer) when ServeConn
	// returns or the server closes.
	rw         io.ReadWriter
	wmu        sync.Mutex
	negotiated bool // touched only by the connection's own goroutine
	evOn       bool // guarded by wmu: events are sent after negotiation
}

// send writes v as one JSON line ending in CRLF, as QEMU's monitor does.
// A message is written by one Write under wmu, so events from other
// goroutines never interleave with a reply.
func (c *conn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\r', '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.rw.Write(b)
	return err
}

// close closes the connection, which ends ServeConn's read loop. -qmp stdio
// (not an io.Closer) is left open.
func (c *conn) close() {
	if cl, ok := c.rw.(io.Closer); ok {
		cl.Close()
	}
}

// ServeConn runs the protocol on one connection until it closes. It is used
// for accepted sockets and for `-qmp stdio`.
func (s *Server) ServeConn(rw io.ReadWriter) {
	c := &conn{rw: rw}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.close()
	}()
	greeting := map[string]any{"QMP": map[string]any{
		"version": map[string]any{
			"qemu":    map[string]int{"major": Version.Major, "minor": Version.Minor, "micro": Version.Micro},
			"package": "petrel",
		},
		"capabilities": []string{},
	}}
	if c.send(greeting) != nil {
		return
	}
	sp := newSplitter(bufio.NewReaderSize(rw, 64<<10))
	for {
		msg, err := sp.next()
		if err != nil {
			if errors.Is(err, errTooLarge) || errors.Is(err, errTooDeep) {
				if c.send(errorReply(nil, &Error{ClassGeneric, "JSON parse error, " + err.Error()})) != nil {
					return
				}
				continue
			}
			return
		}
		reply, after := s.handle(c, msg)
		var sendErr error
		if reply != nil {
			sendErr = c.send(reply)
		}
		// The command has been executed: what follows its reply (a job's
		// work, quit's shutdown) happens even if the client has gone.
		if after != nil {
			after()
		}
		if sendErr != nil {
			return
		}
	}
}

// Emit sends an event to every client that has completed negotiation.
func (s *Server) Emit(event string, data any) {
	now := time.Now()
	ev := map[string]any{
		"event":     event,
		"timestamp": map[string]int64{"seconds": now.Unix(), "microseconds": int64(now.Nanosecond() / 1000)},
	}
	if data != nil {
		ev["data"] = data
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.wmu.Lock()
		on := c.evOn
		c.wmu.Unlock()
		if on {
			c.send(ev)
		}
	}
}

// errorReply builds {"error": {"class", "desc"}, "id"}: id is echoed
// verbatim (any JSON value) and left out when the command had none.
func errorReply(id json.RawMessage, e *Error) map[string]any {
	r := map[string]any{"error": map[string]string{"class": e.Class, "desc": e.Desc}}
	if id != nil {
		r["id"] = id
	}
	return r
}

// okReply builds {"return": ret, "id"}; a command without a value returns
// {} as QEMU does, never null.
func okReply(id json.RawMessage, ret any) map[string]any {
	if ret == nil {
		ret = struct{}{}
	}
	r := map[string]any{"return": ret}
	if id != nil {
		r["id"] = id
	}
	return r
}
