package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoPeer and ErrNoVector are returned by Notify for a doorbell to a peer
// or vector the server has not announced.
var (
	ErrNoPeer   = errors.New("no such ivshmem peer")
	ErrNoVector = errors.New("no such ivshmem vector")
)

// EventKind says what a server message changed.
type EventKind int

const (
	// VectorAdded: Peer announced its eventfd for Vector (a join, one
	// message per vector; Peer == ID() for the client's own vectors).
	VectorAdded EventKind = iota
	// PeerLeft: Peer disconnected; its eventfds are closed.
	PeerLeft
	// ownID: the handshake's ID message (never returned by Next).
	ownID EventKind = -1
)

// Event is one applied server message.
type Event struct {
	Kind   EventKind
	Peer   int
	Vector int
	// FD is the eventfd of VectorAdded. The client owns it: it stays open
	// until the peer leaves or the client is closed.
	FD int
}

// Client is a connection to an ivshmem server: the side QEMU's
// ivshmem-doorbell device plays. Next applies server messages; Notify rings
// a peer's doorbell. Notify and the accessors are safe to call concurrently
// with Next.
type Client struct {
	conn  *net.UnixConn
	id    int
	shmFD int

	// applying counts messages Next has received and not yet applied.
	applying atomic.Int32

	mu     sync.RWMutex // guards peers, closed; fds are closed under mu held for writing
	peers  map[int][]int
	closed bool

	// BeforeClose, if set, is called with the eventfds of a peer that left,
	// just before the client closes them (to unregister them from KVM,
	// which needs the fd). It runs under the client's lock: it must not call
	// the client. Set it before the first Next.
	BeforeClose func(peer int, fds []int)
}

// Dial connects to the server at path and completes the handshake (version,
// own ID, shared memory fd), as QEMU does at realize time.
func Dial(path string) (*Client, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connecting to ivshmem server: %w", err)
	}
	c, err := NewClient(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// NewClient runs the handshake on conn; on success the client owns conn.
func NewClient(conn *net.UnixConn) (*Client, error) {
	c := &Client{conn: conn, id: -1, shmFD: -1, peers: map[int][]int{}}
	v, fd, err := Recv(conn)
	if err != nil {
		return nil, fmt.Errorf("reading ivshmem protocol version: %w", err)
	}
	if fd >= 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: version message carries an fd", ErrProtocol)
	}
	if v != Version {
		return nil, fmt.Errorf("%w: server speaks version %d, want %d", ErrProtocol, v, Version)
	}
	// The server sends ID then shm, but like QEMU accept any order of
	// the remaining initial messages until both are known.
	for c.id < 0 || c.shmFD < 0 {
		v, fd, err := Recv(conn)
		if err != nil {
			c.closeFDs()
			return nil, fmt.Errorf("reading ivshmem setup: %w", err)
		}
		if v == ShmMessage {
			if fd < 0 || c.shmFD >= 0 {
				closeFD(&fd)
				c.closeFDs()
				return nil, fmt.Errorf("%w: shared memory message without fd or repeated", ErrProtocol)
			}
			c.shmFD = fd
			continue
		}
		if _, err := c.apply(v, fd); err != nil {
			c.closeFDs()
			return nil, fmt.Errorf("ivshmem setup: %w", err)
		}
	}
	return c, nil
}

// apply records one (peer, fd) message; a message without fd is the own ID
// until that is known, a departure afterwards.
func (c *Client) apply(v int64, fd int) (Event, error) {
	if v < 0 || v >= MaxPeers {
		closeFD(&fd)
		return Event{}, fmt.Errorf("%w: peer ID %d out of range", ErrProtocol, v)
	}
	peer := int(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		closeFD(&fd)
		return Event{}, net.ErrClosed
	}
	if fd >= 0 {
		fds := c.peers[peer]
		if len(fds) >= MaxVectors {
			unix.Close(fd)
			return Event{}, fmt.Errorf("%w: peer %d announced more than %d vectors", ErrProtocol, peer, MaxVectors)
		}
		c.peers[peer] = append(fds, fd)
		return Event{Kind: VectorAdded, Peer: peer, Vector: len(fds), FD: fd}, nil
	}
	if c.id < 0 {
		c.id = peer
		return Event{Kind: ownID, Peer: peer, FD: -1}, nil
	}
	if peer == c.id {
		return Event{}, fmt.Errorf("%w: server says we (peer %d) left", ErrProtocol, peer)
	}
	if fds := c.peers[peer]; len(fds) > 0 && c.BeforeClose != nil {
		c.BeforeClose(peer, fds)
	}
	for _, f := range c.peers[peer] {
		unix.Close(f)
	}
	delete(c.peers, peer)
	return Event{Kind: PeerLeft, Peer: peer, FD: -1}, nil
}

// Next reads and applies one server message. Errors wrapping ErrProtocol
// concern one bad message and the stream stays usable; any other error
// (the server went away, the client was closed) is final.
func (c *Client) Next() (Event, error) {
	// Wait with MSG_PEEK until a message is there, and count it as being
	// applied before taking it out of the socket: Pending never sees a
	// message that is neither in the socket nor counted.
	if err := c.waitReadable(); err != nil {
		return Event{}, err
	}
	c.applying.Add(1)
	defer c.applying.Add(-1)
	v, fd, err := Recv(c.conn)
	if err != nil {
		return Event{}, err
	}
	if v == ShmMessage {
		closeFD(&fd)
		return Event{}, fmt.Errorf("%w: second shared memory message", ErrProtocol)
	}
	return c.apply(v, fd)
}

// waitReadable blocks (through the runtime's poller, honouring the read
// deadline) until the socket has data or is closed, without consuming it.
func (c *Client) waitReadable() error {
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return err
	}
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, perr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return perr != unix.EAGAIN // data, EOF or an error Recv will report
	})
}

// Pending reports whether server messages are waiting to be applied: bytes
// unread in the socket, or a message Next has read but not yet applied. A
// doorbell to a peer that is not known yet is worth retrying only then.
func (c *Client) Pending() bool {
	if c.applying.Load() > 0 {
		return true
	}
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n > 0
}

// SetReadDeadline bounds Next (zero: no deadline); Next then fails with an
// error wrapping os.ErrDeadlineExceeded.
func (c *Client) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// ID is the client's peer ID assigned by the server.
func (c *Client) ID() int { return c.id }

// ShmFD is the shared memory fd; it stays owned by the client.
func (c *Client) ShmFD() int { return c.shmFD }

// Vectors returns how many eventfds peer has announced (0 for an absent peer).
func (c *Client) Vectors(peer int) int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.peers[peer])
}

// VectorFD returns peer's eventfd for vector (the client keeps owning it).
func (c *Client) VectorFD(peer, vector int) (int, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fds := c.peers[peer]
	if vector < 0 || vector >= len(fds) {
		return -1, false
	}
	return fds[vector], true
}

// Peers lists the announced peers (including the client itself once its
// vectors arrived), sorted.
func (c *Client) Peers() []int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids := make([]int, 0, len(c.peers))
	for id := range c.peers {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

var one = func() []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, 1)
	return b
}()

// Notify rings peer's doorbell for vector: it adds 1 to that eventfd.
func (c *Client) Notify(peer, vector int) error {
	if err := c.Ring(peer, vector); err != nil {
		return fmt.Errorf("doorbell to peer %d vector %d: %w", peer, vector, err)
	}
	return nil
}

// Ring is Notify for the guest's exit path: it does not allocate, and
// returns ErrNoPeer, ErrNoVector, net.ErrClosed or the write's errno bare.
func (c *Client) Ring(peer, vector int) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return net.ErrClosed
	}
	fds, ok := c.peers[peer]
	if !ok {
		return ErrNoPeer
	}
	if vector < 0 || vector >= len(fds) {
		return ErrNoVector
	}
	if _, err := unix.Write(fds[vector], one); err != nil && err != unix.EAGAIN {
		// EAGAIN: the counter is saturated, the peer has a pending event anyway.
		return err
	}
	return nil
}

func (c *Client) closeFDs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, fds := range c.peers {
		for _, f := range fds {
			unix.Close(f)
		}
		delete(c.peers, id)
	}
	closeFD(&c.shmFD)
	c.closed = true
}

// Close disconnects and closes every fd the client received (the shared
// memory fd too: a mapping of it stays valid). A concurrent Next returns an
// error.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	err := c.conn.Close()
	c.closeFDs()
	return err
}
