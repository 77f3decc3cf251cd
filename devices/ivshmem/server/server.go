// Package server is an ivshmem server compatible with QEMU's
// contrib/ivshmem-server: it owns the shared memory object and one eventfd
// per vector per peer, hands each connecting client (a QEMU or Petrel
// ivshmem-doorbell device, or any proto.Client) its ID, the memory and
// everybody's eventfds, and tells the others when a peer joins or leaves.
//
// Invariants: every peer in peers has been sent its full setup; each fd
// (socket, eventfd) belongs to exactly one peer and is closed exactly once,
// by closePeerLocked (through removeLocked, Close, or addPeer giving up on
// a newcomer); all sends happen under mu, so every client sees joins and
// departures in one global order.
package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
	"golang.org/x/sys/unix"
)

// SendTimeout bounds how long one client may stall the server by not
// reading its socket; such a client is dropped.
const SendTimeout = 2 * time.Second

// Config describes a server. ShmPath is the object's path (for a shm_open
// name use hostmem.ShmPath); a directory (a hugetlbfs mount, as QEMU's -m
// allows) gets an unlinked object of its own.
type Config struct {
	// SocketPath is where the server listens; the socket is removed when
	// the server closes.
	SocketPath string
	ShmPath    string
	// Size is the shared memory's size in bytes: an existing object must
	// have exactly this size (hostmem.Open), a new one is created with it.
	Size uint64
	// Vectors is the number of interrupt vectors, and so of eventfds, per
	// peer: 1..proto.MaxVectors. Every client must be configured with the
	// same count (QEMU's vectors= property); the server cannot check it.
	Vectors int
	// MaxPeers bounds simultaneous peers; 0 means proto.MaxPeers (IDs are
	// 16 bits).
	MaxPeers int
	// Logf, if set, gets one line per connection event.
	Logf func(format string, args ...any)
}

// peer is one connected client.
type peer struct {
	id   int // 0..proto.MaxPeers-1, unique among the connected peers
	conn *net.UnixConn
	// vectors are the peer's eventfds, one per vector: the peer waits on
	// them (they are its interrupts) and every other peer writes them
	// (its doorbell to this peer). Nonblocking, close-on-exec, owned by
	// the server until closePeerLocked.
	vectors []int
}

// Server accepts clients on a UNIX socket. Create it with New, run Serve,
// stop it with Close.
type Server struct {
	cfg Config // with the defaults New filled in
	ln  *net.UnixListener
	// shm is the shared memory object, sent to every client; the server
	// never maps it.
	shm *os.File

	mu     sync.Mutex // guards everything below and every send
	peers  map[int]*peer
	nextID int // QEMU's cur_id: IDs are handed out incrementally, skipping used ones
	closed bool

	// readers counts the watch goroutines, which Close waits for so that
	// none outlives the server.
	readers sync.WaitGroup
}

// New opens (or creates) the shared memory object and listens on the socket.
// A stale socket file nobody listens on is replaced.
func New(cfg Config) (*Server, error) {
	if cfg.Vectors < 1 || cfg.Vectors > proto.MaxVectors {
		return nil, fmt.Errorf("ivshmem server: %d vectors, want 1..%d", cfg.Vectors, proto.MaxVectors)
	}
	if cfg.MaxPeers <= 0 || cfg.MaxPeers > proto.MaxPeers {
		cfg.MaxPeers = proto.MaxPeers
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	var shm *os.File
	var err error
	if st, serr := os.Stat(cfg.ShmPath); serr == nil && st.IsDir() {
		shm, err = hostmem.AnonymousIn(cfg.ShmPath, "server", cfg.Size)
	} else {
		shm, err = hostmem.Open(cfg.ShmPath, cfg.Size)
	}
	if err != nil {
		return nil, fmt.Errorf("ivshmem server: %w", err)
	}
	if err := removeStaleSocket(cfg.SocketPath); err != nil {
		shm.Close()
		return nil, fmt.Errorf("ivshmem server: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.SocketPath, Net: "unix"})
	if err != nil {
		shm.Close()
		return nil, fmt.Errorf("ivshmem server: listening on %s: %w", cfg.SocketPath, err)
	}
	ln.SetUnlinkOnClose(true)
	return &Server{cfg: cfg, ln: ln, shm: shm, peers: map[int]*peer{}}, nil
}

// removeStaleSocket removes a socket file left by a server that is gone.
// A live server is detected by connecting to it (a second server would
// otherwise silently steal the path from the first); a file that is not a
// socket is never removed.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another server is listening there", path)
	}
	return os.Remove(path)
}

// Serve accepts clients until Close; it returns nil after Close.
func (s *Server) Serve() error {
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				// Out of fds: back off instead of spinning.
				s.cfg.Logf("accept: %v", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("ivshmem server: accepting: %w", err)
		}
		s.addPeer(conn)
	}
}

// Close stops accepting, disconnects every client and closes every fd.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for _, p := range s.peers {
		s.closePeerLocked(p)
	}
	s.peers = map[int]*peer{}
	if cerr := s.shm.Close(); err == nil {
		err = cerr
	}
	s.mu.Unlock()
	s.readers.Wait()
	return err
}

// Peers returns the IDs of the connected clients, sorted.
func (s *Server) Peers() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedIDsLocked()
}

// sortedIDsLocked returns the connected peers' IDs in increasing order,
// the order in which announcements go out. Called with mu held.
func (s *Server) sortedIDsLocked() []int {
	ids := make([]int, 0, len(s.peers))
	for id := range s.peers {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// freeIDLocked picks the next unused ID at or after nextID, wrapping.
func (s *Server) freeIDLocked() (int, bool) {
	if len(s.peers) >= s.cfg.MaxPeers {
		return 0, false
	}
	for i := 0; i < proto.MaxPeers; i++ {
		id := (s.nextID + i) % proto.MaxPeers
		if _, used := s.peers[id]; !used {
			s.nextID = (id + 1) % proto.MaxPeers
			return id, true
		}
	}
	return 0, false
}

// addPeer admits a new client: it allocates an ID and the eventfds, sends
// the setup, and exchanges announcements with the others, all under mu so
// no join or leave interleaves. A newcomer whose setup fails is closed and
// its join, if already announced, is taken back by announcing a leave;
// an existing peer that cannot be told is dropped after the newcomer is
// in place.
func (s *Server) addPeer(conn *net.UnixConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		conn.Close()
		return
	}
	id, ok := s.freeIDLocked()
	if !ok {
		s.cfg.Logf("refusing client: %d peers connected", len(s.peers))
		conn.Close()
		return
	}
	p := &peer{id: id, conn: conn}
	for range s.cfg.Vectors {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			s.cfg.Logf("refusing client: creating eventfd: %v", err)
			s.closePeerLocked(p)
			return
		}
		p.vectors = append(p.vectors, fd)
	}
	// Each client gets its own SendTimeout per batch: a stalled one must not
	// eat into the others' time.
	conn.SetWriteDeadline(time.Now().Add(SendTimeout))
	if err := s.sendSetup(p); err != nil {
		s.cfg.Logf("peer %d: setup failed: %v", id, err)
		s.closePeerLocked(p)
		return
	}
	// Tell the others about the newcomer, then the newcomer about the
	// others and finally about itself, as QEMU's server does.
	var broken []*peer
	others := s.sortedIDsLocked()
	for _, oid := range others {
		o := s.peers[oid]
		o.conn.SetWriteDeadline(time.Now().Add(SendTimeout))
		if err := sendVectors(o.conn, p); err != nil {
			s.cfg.Logf("peer %d: dropping, announcing peer %d failed: %v", oid, id, err)
			broken = append(broken, o)
		}
	}
	conn.SetWriteDeadline(time.Now().Add(SendTimeout))
	for _, oid := range others {
		if err := sendVectors(conn, s.peers[oid]); err != nil {
			s.cfg.Logf("peer %d: setup failed: %v", id, err)
			s.closePeerLocked(p)
			p = nil
			break
		}
	}
	if p != nil {
		if err := sendVectors(conn, p); err != nil {
			s.cfg.Logf("peer %d: setup failed: %v", id, err)
			s.closePeerLocked(p)
			p = nil
		}
	}
	if p != nil {
		s.peers[id] = p
		s.cfg.Logf("peer %d joined", id)
		s.readers.Add(1)
		go s.watch(p)
	}
	for _, o := range broken {
		s.removeLocked(o)
	}
	if p == nil {
		// The others were told about a peer that never made it.
		for _, o := range s.announceLeaveLocked(id) {
			s.removeLocked(o)
		}
	}
}

// sendSetup sends a newcomer the protocol version, its own ID and the
// shared memory fd, the first three messages of the ivshmem server
// protocol (proto: version, then ID, then -1 with the shm fd), none of
// which a client may miss.
func (s *Server) sendSetup(p *peer) error {
	if err := proto.Send(p.conn, proto.Version, -1); err != nil {
		return err
	}
	if err := proto.Send(p.conn, int64(p.id), -1); err != nil {
		return err
	}
	return proto.Send(p.conn, proto.ShmMessage, int(s.shm.Fd()))
}

// sendVectors announces p on c: one message per vector carrying p's ID and
// that vector's eventfd, in vector order, which is how a client learns
// vector numbers (the n-th fd received for an ID is vector n).
func sendVectors(c *net.UnixConn, p *peer) error {
	for _, fd := range p.vectors {
		if err := proto.Send(c, int64(p.id), fd); err != nil {
			return err
		}
	}
	return nil
}

// watch ends the client at its first byte, hangup or error: the protocol
// has nothing for a client to say. A plain read discards any fds the client
// passes, so they never enter our fd table.
func (s *Server) watch(p *peer) {
	defer s.readers.Done()
	var b [64]byte
	_, err := p.conn.Read(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers[p.id] == p {
		if err != nil {
			s.cfg.Logf("peer %d left", p.id)
		} else {
			s.cfg.Logf("peer %d sent data: dropping it", p.id)
		}
		s.removeLocked(p)
	}
}

// removeLocked drops p and tells the others; a peer that cannot be told is
// dropped in turn.
func (s *Server) removeLocked(p *peer) {
	queue := []*peer{p}
	for len(queue) > 0 {
		p, queue = queue[0], queue[1:]
		if s.peers[p.id] != p {
			continue
		}
		delete(s.peers, p.id)
		s.closePeerLocked(p)
		queue = append(queue, s.announceLeaveLocked(p.id)...)
	}
}

// announceLeaveLocked sends (id, no fd) to every peer and returns those the
// send failed for.
func (s *Server) announceLeaveLocked(id int) []*peer {
	var broken []*peer
	for _, oid := range s.sortedIDsLocked() {
		o := s.peers[oid]
		o.conn.SetWriteDeadline(time.Now().Add(SendTimeout))
		if err := proto.Send(o.conn, int64(id), -1); err != nil {
			s.cfg.Logf("peer %d: dropping, announcing departure of %d failed: %v", oid, id, err)
			broken = append(broken, o)
		}
	}
	return broken
}

// closePeerLocked closes p's socket (ending its watch goroutine) and eventfds.
func (s *Server) closePeerLocked(p *peer) {
	p.conn.Close()
	for _, fd := range p.vectors {
		unix.Close(fd)
	}
	p.vectors = nil
}
