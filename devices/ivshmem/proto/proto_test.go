package proto

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns two connected stream sockets as UnixConns.
func pair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sock")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func eventfd(t testing.TB) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestRecvRejectsBadFraming(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	before := countFDs(t)
	e1, e2 := eventfd(t), eventfd(t)
	// Two fds on one message: error, both closed on the receiving side.
	var msg [8]byte
	if _, _, err := a.WriteMsgUnix(msg[:], unix.UnixRights(e1, e2), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Recv(b); !errors.Is(err, ErrProtocol) {
		t.Fatalf("two fds: %v, want ErrProtocol", err)
	}
	unix.Close(e1)
	unix.Close(e2)
	if got := countFDs(t); got != before {
		t.Fatalf("%d fds open, %d before: received fds leaked", got, before)
	}
	// A message split across writes is reassembled, its fd kept.
	e3 := eventfd(t)
	binary.LittleEndian.PutUint64(msg[:], 0x1234)
	a.WriteMsgUnix(msg[:3], unix.UnixRights(e3), nil)
	unix.Close(e3)
	a.Write(msg[3:])
	v, fd, err := Recv(b)
	if err != nil || v != 0x1234 || fd < 0 {
		t.Fatalf("split message: %#x fd %d %v", v, fd, err)
	}
	unix.Close(fd)
	// One fd on each half of a split message: error, both closed.
	e4, e5 := eventfd(t), eventfd(t)
	a.WriteMsgUnix(msg[:3], unix.UnixRights(e4), nil)
	a.WriteMsgUnix(msg[3:], unix.UnixRights(e5), nil)
	unix.Close(e4)
	unix.Close(e5)
	if _, _, err := Recv(b); !errors.Is(err, ErrProtocol) {
		t.Fatalf("two fds on a split message: %v", err)
	}
	if got := countFDs(t); got != before {
		t.Fatalf("%d fds open, %d before: split-message fds leaked", got, before)
	}
	// Closed after 5 bytes: a protocol error, not a short value.
	a.Write(msg[:5])
	a.Close()
	if _, _, err := Recv(b); !errors.Is(err, ErrProtocol) {
		t.Fatalf("truncated message: %v", err)
	}
	if _, _, err := Recv(b); err == nil || errors.Is(err, ErrProtocol) {
		t.Fatalf("closed connection: %v, want a final error", err)
	}
}

func TestClientHandshakeErrors(t *testing.T) {
	send := func(c *net.UnixConn, v int64, fd int) {
		if err := Send(c, v, fd); err != nil {
			t.Fatal(err)
		}
	}
	shm := eventfd(t) // any fd stands in for the memory here
	defer unix.Close(shm)
	for name, script := range map[string]func(c *net.UnixConn){
		"bad version":     func(c *net.UnixConn) { send(c, 1, -1) },
		"version with fd": func(c *net.UnixConn) { send(c, 0, shm) },
		"shm without fd":  func(c *net.UnixConn) { send(c, 0, -1); send(c, 3, -1); send(c, -1, -1) },
		"id out of range": func(c *net.UnixConn) { send(c, 0, -1); send(c, 1<<16, -1) },
		"negative id":     func(c *net.UnixConn) { send(c, 0, -1); send(c, -2, -1) },
		"hangup":          func(c *net.UnixConn) { send(c, 0, -1); send(c, 3, -1) },
	} {
		a, b := pair(t)
		before := countFDs(t)
		script(a)
		a.Close()
		if c, err := NewClient(b); err == nil {
			c.Close()
			t.Errorf("%s: handshake succeeded", name)
		}
		b.Close()
		if got := countFDs(t); got != before-2 {
			t.Errorf("%s: %d fds open, want %d", name, got, before-2)
		}
	}
	// Good handshake in QEMU's tolerated order (shm before ID), then a
	// peer, a duplicate own-departure and a peer leaving.
	a, b := pair(t)
	defer a.Close()
	send(a, 0, -1)
	send(a, -1, shm)
	send(a, 5, -1)
	c, err := NewClient(b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ID() != 5 || c.ShmFD() < 0 {
		t.Fatalf("id %d shm %d", c.ID(), c.ShmFD())
	}
	send(a, 2, shm)
	var left []int
	c.BeforeClose = func(p int, fds []int) { left = append(left, p, len(fds)) }
	if ev, err := c.Next(); err != nil || ev.Kind != VectorAdded || ev.Peer != 2 || ev.Vector != 0 {
		t.Fatalf("%+v %v", ev, err)
	}
	send(a, 5, -1)
	if _, err := c.Next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("server saying we left: %v", err)
	}
	send(a, -1, shm)
	if _, err := c.Next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("second shm: %v", err)
	}
	send(a, 2, -1)
	if ev, err := c.Next(); err != nil || ev.Kind != PeerLeft || ev.Peer != 2 {
		t.Fatalf("%+v %v", ev, err)
	}
	if len(left) != 2 || left[0] != 2 || left[1] != 1 {
		t.Fatalf("BeforeClose saw %v", left)
	}
	if err := c.Notify(2, 0); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("notify departed peer: %v", err)
	}
}

// FuzzClient feeds a server message stream to the client: 9-byte records,
// a flag byte (bit 0: attach an fd) and the little-endian value. The
// client must not panic, and every fd it received must be closed after
// Close.
func FuzzClient(f *testing.F) {
	rec := func(flag byte, v int64) []byte {
		b := make([]byte, 9)
		b[0] = flag
		binary.LittleEndian.PutUint64(b[1:], uint64(v))
		return b
	}
	var good []byte
	for _, r := range [][]byte{rec(0, 0), rec(0, 1), rec(1, -1), rec(1, 0), rec(1, 1), rec(1, 1), rec(0, 0), rec(1, 65535)} {
		good = append(good, r...)
	}
	f.Add(good)
	f.Add(append(rec(0, 0), rec(1, 70000)...))
	f.Add(append(append(rec(0, 0), rec(1, -1)...), rec(0, -1)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 9*200 {
			return
		}
		before := countFDs(t)
		a, b := pair(t)
		ev := eventfd(t)
		written := make(chan struct{})
		go func() {
			defer close(written)
			defer a.Close()
			for len(data) >= 9 {
				fd := -1
				if data[0]&1 != 0 {
					fd = ev
				}
				if Send(a, int64(binary.LittleEndian.Uint64(data[1:9])), fd) != nil {
					return
				}
				data = data[9:]
			}
			if len(data) > 0 {
				a.Write(data) // a trailing partial message
			}
		}()
		c, err := NewClient(b)
		if err == nil {
			for i := 0; i < 300; i++ {
				if _, err := c.Next(); err != nil && !errors.Is(err, ErrProtocol) {
					break
				}
			}
			c.Close()
		} else {
			b.Close()
		}
		<-written // the writer fails once b is closed
		unix.Close(ev)
		if got := countFDs(t); got != before {
			t.Fatalf("%d fds open after the client closed, %d before", got, before)
		}
	})
}

// TestPending: a server message is Pending from the moment it is in the
// socket until Next has applied it, so a doorbell to a peer announced in it
// can wait for it instead of being dropped; with nothing queued, a doorbell
// to an unknown peer is not worth waiting for.
func TestPending(t *testing.T) {
	srv, cl := pair(t)
	defer srv.Close()
	shm := eventfd(t)
	defer unix.Close(shm)
	for _, m := range []struct {
		v  int64
		fd int
	}{{Version, -1}, {2, -1}, {ShmMessage, shm}} {
		if err := Send(srv, m.v, m.fd); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewClient(cl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Pending() {
		t.Fatal("Pending with nothing queued")
	}
	if err := c.Ring(7, 0); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("ring of unknown peer: %v", err)
	}
	efd := eventfd(t)
	if err := Send(srv, 7, efd); err != nil {
		t.Fatal(err)
	}
	unix.Close(efd)
	for deadline := 0; !c.Pending(); deadline++ {
		if deadline > 1000 {
			t.Fatal("a queued message is not Pending")
		}
		time.Sleep(time.Millisecond)
	}
	ev, err := c.Next()
	if err != nil || ev.Kind != VectorAdded || ev.Peer != 7 {
		t.Fatalf("Next: %+v, %v", ev, err)
	}
	if c.Pending() {
		t.Fatal("Pending after the message was applied")
	}
	if err := c.Ring(7, 0); err != nil {
		t.Fatalf("ring of the announced peer: %v", err)
	}
}
