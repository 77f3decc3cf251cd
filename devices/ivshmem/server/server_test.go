package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
	"golang.org/x/sys/unix"
)

const testSize = 1 << 16

type testServer struct {
	*Server
	sock, shm string
	done      chan error
}

func start(t *testing.T, vectors, maxPeers int) *testServer {
	t.Helper()
	dir := t.TempDir()
	ts := &testServer{sock: filepath.Join(dir, "sock"), shm: filepath.Join(dir, "shm"), done: make(chan error, 1)}
	s, err := New(Config{SocketPath: ts.sock, ShmPath: ts.shm, Size: testSize, Vectors: vectors, MaxPeers: maxPeers, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = s
	go func() { ts.done <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing server: %v", err)
		}
		if err := <-ts.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

func dial(t *testing.T, ts *testServer) *proto.Client {
	t.Helper()
	c, err := proto.Dial(ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next reads one event with a deadline so a missing message fails the test
// instead of hanging it.
func next(t *testing.T, c *proto.Client) proto.Event {
	t.Helper()
	type res struct {
		ev  proto.Event
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ev, err := c.Next()
		ch <- res{ev, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("client %d: %v", c.ID(), r.err)
		}
		return r.ev
	case <-time.After(5 * time.Second):
		t.Fatalf("client %d: no message from the server", c.ID())
	}
	return proto.Event{}
}

// expectJoin consumes the vector messages of peer.
func expectJoin(t *testing.T, c *proto.Client, peer, vectors int) {
	t.Helper()
	for v := range vectors {
		ev := next(t, c)
		if ev.Kind != proto.VectorAdded || ev.Peer != peer || ev.Vector != v || ev.FD < 0 {
			t.Fatalf("client %d: got %+v, want vector %d of peer %d", c.ID(), ev, v, peer)
		}
	}
}

func expectLeave(t *testing.T, c *proto.Client, peer int) {
	t.Helper()
	ev := next(t, c)
	if ev.Kind != proto.PeerLeft || ev.Peer != peer {
		t.Fatalf("client %d: got %+v, want peer %d leaving", c.ID(), ev, peer)
	}
	if c.Vectors(peer) != 0 {
		t.Fatalf("client %d still has vectors of departed peer %d", c.ID(), peer)
	}
}

func waitPeers(t *testing.T, ts *testServer, n int) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if len(ts.Peers()) == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("server has peers %v, want %d of them", ts.Peers(), n)
}

func readEventfd(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	for i := 0; i < 500; i++ {
		_, err := unix.Read(fd, b[:])
		if err == nil {
			return binary.NativeEndian.Uint64(b[:])
		}
		if err != unix.EAGAIN {
			t.Fatalf("reading eventfd: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("eventfd %d never signalled", fd)
	return 0
}

func TestHandshakeAndSharedMemory(t *testing.T) {
	ts := start(t, 3, 0)
	c := dial(t, ts)
	if c.ID() != 0 {
		t.Fatalf("first client got ID %d, want 0", c.ID())
	}
	expectJoin(t, c, 0, 3)
	size, err := hostmem.SizeOf(c.ShmFD())
	if err != nil || size != testSize {
		t.Fatalf("shared memory size %d (%v), want %d", size, err, testSize)
	}
	m, err := hostmem.Map(c.ShmFD(), size)
	if err != nil {
		t.Fatal(err)
	}
	defer hostmem.Unmap(m)
	copy(m[100:], "hello ivshmem")
	got := make([]byte, 13)
	f, err := os.Open(ts.shm)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 100); err != nil || string(got) != "hello ivshmem" {
		t.Fatalf("shm object holds %q (%v), want what the client wrote", got, err)
	}
}

func TestJoinLeaveAndDoorbell(t *testing.T) {
	ts := start(t, 2, 0)
	a := dial(t, ts)
	expectJoin(t, a, 0, 2)
	b := dial(t, ts)
	if b.ID() != 1 {
		t.Fatalf("second client got ID %d, want 1", b.ID())
	}
	expectJoin(t, b, 0, 2) // the existing peer first
	expectJoin(t, b, 1, 2) // then itself
	expectJoin(t, a, 1, 2) // a hears of b
	if got := a.Peers(); len(got) != 2 {
		t.Fatalf("a knows peers %v, want [0 1]", got)
	}
	// a rings b's vector 1: b's own eventfd for vector 1 fires, vector 0 not.
	if err := a.Notify(1, 1); err != nil {
		t.Fatal(err)
	}
	bFDs := ownFDs(t, b, 2)
	if v := readEventfd(t, bFDs[1]); v != 1 {
		t.Fatalf("eventfd count %d, want 1", v)
	}
	if _, err := unix.Read(bFDs[0], make([]byte, 8)); err != unix.EAGAIN {
		t.Fatalf("vector 0 of b fired too (%v)", err)
	}
	if err := a.Notify(7, 0); !errors.Is(err, proto.ErrNoPeer) {
		t.Fatalf("doorbell to absent peer: %v, want ErrNoPeer", err)
	}
	if err := a.Notify(1, 2); !errors.Is(err, proto.ErrNoVector) {
		t.Fatalf("doorbell to absent vector: %v, want ErrNoVector", err)
	}
	b.Close()
	expectLeave(t, a, 1)
	waitPeers(t, ts, 1)
}

// ownFDs returns c's own eventfds, the ones the server signals for it.
func ownFDs(t *testing.T, c *proto.Client, n int) []int {
	t.Helper()
	fds := make([]int, n)
	for v := range n {
		fd, ok := c.VectorFD(c.ID(), v)
		if !ok {
			t.Fatalf("client %d has no own vector %d", c.ID(), v)
		}
		fds[v] = fd
	}
	return fds
}

func TestIDsAreIncrementalAndReusedOnlyWhenFree(t *testing.T) {
	ts := start(t, 1, 0)
	var cs []*proto.Client
	for i := range 3 {
		c := dial(t, ts)
		if c.ID() != i {
			t.Fatalf("client %d got ID %d", i, c.ID())
		}
		cs = append(cs, c)
	}
	cs[1].Close()
	waitPeers(t, ts, 2)
	if c := dial(t, ts); c.ID() != 3 {
		t.Fatalf("after 1 left, new client got ID %d, want 3 (incremental)", c.ID())
	}
	// Near the top of the ID space the counter wraps and skips used IDs.
	ts.mu.Lock()
	ts.nextID = proto.MaxPeers - 1
	ts.mu.Unlock()
	if c := dial(t, ts); c.ID() != proto.MaxPeers-1 {
		t.Fatalf("got ID %d, want %d", c.ID(), proto.MaxPeers-1)
	}
	// 0 is taken, 1 is free again.
	if c := dial(t, ts); c.ID() != 1 {
		t.Fatalf("after wrapping got ID %d, want the free ID 1", c.ID())
	}
}

func TestPeerLimit(t *testing.T) {
	ts := start(t, 1, 2)
	dial(t, ts)
	dial(t, ts)
	if c, err := proto.Dial(ts.sock); err == nil {
		c.Close()
		t.Fatalf("third client got ID %d beyond a limit of 2 peers", c.ID())
	}
	waitPeers(t, ts, 2)
}

func rawConn(t *testing.T, ts *testServer) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestGarbageClientIsDroppedAlone(t *testing.T) {
	ts := start(t, 1, 0)
	good := dial(t, ts)
	expectJoin(t, good, 0, 1)

	bad := rawConn(t, ts)
	expectJoin(t, good, 1, 1)
	if _, err := bad.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	expectLeave(t, good, 1)

	// A client passing an fd is dropped too, and the fd does not leak into
	// the server (it is never received).
	evil := rawConn(t, ts)
	expectJoin(t, good, 2, 1)
	if _, _, err := evil.WriteMsgUnix([]byte{1}, unix.UnixRights(int(os.Stdin.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	expectLeave(t, good, 2)

	// Connect-and-vanish before reading anything.
	gone := rawConn(t, ts)
	expectJoin(t, good, 3, 1)
	gone.Close()
	expectLeave(t, good, 3)

	// Disconnect in the middle of the handshake: read the version only.
	half := rawConn(t, ts)
	if v, fd, err := proto.Recv(half); err != nil || v != proto.Version || fd != -1 {
		t.Fatalf("version message %d fd %d: %v", v, fd, err)
	}
	expectJoin(t, good, 4, 1)
	half.Close()
	expectLeave(t, good, 4)

	// The good client and the server are unharmed.
	late := dial(t, ts)
	expectJoin(t, late, 0, 1)
	expectJoin(t, late, 5, 1)
	expectJoin(t, good, 5, 1)
	if err := late.Notify(0, 0); err != nil {
		t.Fatal(err)
	}
	if v := readEventfd(t, ownFDs(t, good, 1)[0]); v != 1 {
		t.Fatalf("eventfd count %d", v)
	}
	waitPeers(t, ts, 2)
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestNoFDLeaks runs 64 peers joining and leaving in a loop against a
// server in this process and counts /proc/self/fd before and after.
func TestNoFDLeaks(t *testing.T) {
	before := openFDs(t)
	dir := t.TempDir()
	s, err := New(Config{SocketPath: filepath.Join(dir, "sock"), ShmPath: filepath.Join(dir, "shm"), Size: testSize, Vectors: 4})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	watcher, err := proto.Dial(filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	// The watcher drains its socket concurrently (a client that does not
	// read is dropped once its socket buffer fills) and must see every join
	// and every departure.
	counted := make(chan [2]int, 1)
	go func() {
		joins, leaves := 0, 0
		for joins < (3*64+1)*4 || leaves < 3*64 {
			ev, err := watcher.Next()
			if err != nil {
				break
			}
			if ev.Kind == proto.VectorAdded {
				joins++
			} else {
				leaves++
			}
		}
		counted <- [2]int{joins, leaves}
	}()
	for round := range 3 {
		var cs []*proto.Client
		for i := range 64 {
			c, err := proto.Dial(filepath.Join(dir, "sock"))
			if err != nil {
				t.Fatalf("round %d client %d: %v", round, i, err)
			}
			cs = append(cs, c)
			if i%3 == 0 {
				// Some leave while others still join.
				cs[i/2].Close()
			}
		}
		for _, c := range cs {
			c.Close()
		}
		for i := 0; len(s.Peers()) != 1; i++ {
			if i > 500 {
				t.Fatalf("round %d: server still has peers %v", round, s.Peers())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	select {
	case n := <-counted:
		if n != [2]int{(3*64 + 1) * 4, 3 * 64} {
			t.Fatalf("watcher saw %d vector messages and %d departures", n[0], n[1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watcher did not see every join and departure")
	}
	if mid := openFDs(t); mid <= before {
		t.Fatalf("server and watcher hold %d fds, before %d: the count is not measuring", mid, before)
	}
	watcher.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d fds open after the server closed, %d before: leak", after, before)
	}
	if _, err := os.Stat(filepath.Join(dir, "sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	shm := filepath.Join(dir, "shm")
	sock := filepath.Join(dir, "sock")
	for _, c := range []Config{
		{SocketPath: sock, ShmPath: shm, Size: testSize, Vectors: 0},
		{SocketPath: sock, ShmPath: shm, Size: testSize, Vectors: 65},
		{SocketPath: sock, ShmPath: shm, Size: 3 << 20, Vectors: 1},
		{SocketPath: filepath.Join(dir, "no", "sock"), ShmPath: shm, Size: testSize, Vectors: 1},
	} {
		if s, err := New(c); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded", c)
		}
	}
	// An existing object of another size is refused, not truncated.
	if err := os.WriteFile(shm, bytes.Repeat([]byte{7}, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := New(Config{SocketPath: sock, ShmPath: shm, Size: testSize, Vectors: 1}); !errors.Is(err, hostmem.ErrSize) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("size mismatch: %v, want ErrSize", err)
	}
	// A live server's socket is not stolen.
	s1, err := New(Config{SocketPath: sock, ShmPath: filepath.Join(dir, "shm2"), Size: testSize, Vectors: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	go s1.Serve()
	if s2, err := New(Config{SocketPath: sock, ShmPath: filepath.Join(dir, "shm2"), Size: testSize, Vectors: 1}); err == nil {
		s2.Close()
		t.Fatal("second server took over a live socket")
	}
}

// TestStalledClientIsDropped: a client that never reads fills its socket
// buffer; the server drops it after SendTimeout instead of blocking forever,
// and the other clients keep working.
func TestStalledClientIsDropped(t *testing.T) {
	ts := start(t, proto.MaxVectors, 0)
	rawConn(t, ts) // ID 0: connects, never reads
	waitPeers(t, ts, 1)
	good := dial(t, ts)
	go func() {
		for {
			if _, err := good.Next(); err != nil && !errors.Is(err, proto.ErrProtocol) {
				return
			}
		}
	}()
	// Each join and leave sends the stalled client 65 messages with fds.
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("the stalled client was never dropped")
		}
		c, err := proto.Dial(ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if ids := ts.Peers(); len(ids) > 0 && ids[0] != 0 {
			break
		}
	}
	late := dial(t, ts)
	if err := good.Notify(late.ID(), 0); err != nil {
		// The good client may not have read the announcement yet.
		for i := 0; i < 500 && errors.Is(err, proto.ErrNoPeer); i++ {
			time.Sleep(10 * time.Millisecond)
			err = good.Notify(late.ID(), 0)
		}
		if err != nil {
			t.Fatalf("good client after the stall: %v", err)
		}
	}
}

// TestShmDirectory: -m with a directory (a hugetlbfs mount in QEMU's usage)
// gets an unlinked object there; clients still share it.
func TestShmDirectory(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(t.TempDir(), "sock")
	s, err := New(Config{SocketPath: sock, ShmPath: dir, Size: testSize, Vectors: 1})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("object left a name in the directory: %v", ents)
	}
	a, err := proto.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := proto.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ma, err := hostmem.Map(a.ShmFD(), testSize)
	if err != nil {
		t.Fatal(err)
	}
	defer hostmem.Unmap(ma)
	mb, err := hostmem.Map(b.ShmFD(), testSize)
	if err != nil {
		t.Fatal(err)
	}
	defer hostmem.Unmap(mb)
	copy(ma[10:], "both")
	if string(mb[10:14]) != "both" {
		t.Fatal("the two clients do not share the object")
	}
}
